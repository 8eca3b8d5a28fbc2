#!/usr/bin/env bash
# Two builds of EdgeMesh side by side in one run: this tree and an older revision (default
# 38a6906, the last commit before the restructure of issue #18), on the two hot paths — the L7
# portal (native engine) against one nginx backend, with nginx's reverse proxy as the reference,
# and the DNS server (one A record) with unbound as the reference. Paired rounds, the order
# alternating (old, new, reference / reference, new, old), each process pinned to core 1 and the
# load to core 0, the others stopped (SIGSTOP) while one is measured. Prints every round and the
# medians of new/old, old/reference and new/reference.
# Usage: [PAIRS=n] bench/builds.sh [OLD_REVISION] [seconds per round, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
OLDREV=${1:-38a6906}
SECS=${2:-5}
PAIRS=${PAIRS:-8}
NEW=$PWD
W=$(mktemp -d)
chmod 755 "$W"
cleanup() {
  kill -CONT $(jobs -p) 2>/dev/null || true
  kill $(jobs -p) 2>/dev/null || true
  sleep 0.2
  git -C "$NEW" worktree remove --force "$W/old" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
for t in wrk nginx dnsperf unbound taskset curl dig; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done

# --- the two builds ---------------------------------------------------------------------------
npm run build >/dev/null
git worktree add --detach "$W/old" "$OLDREV" >/dev/null 2>&1
cp -a "$NEW/node_modules" "$W/old/node_modules" # workspace links are relative: they point into old
(cd "$W/old" && npx tsc -b tsconfig.json >/dev/null && cd packages/edgemesh-module && npx node-gyp rebuild >/dev/null 2>&1)
for b in old new; do
  root=$NEW; [ $b = old ] && root=$W/old
  (cd "$root" && NODE_PATH="$root/node_modules" npx tsc -p bench/tsconfig.json --noEmit false --outDir "$W/js-$b" >/dev/null)
done
echo "builds: old $(git -C "$W/old" log --oneline -1 | cut -c1-60)…; new $(git log --oneline -1 | cut -c1-60)…"

# --- L7: nginx backend, nginx reverse proxy, the two EdgeMesh L7 portals ------------------------
BE=26180; NGP=26181; OLD7=26182; NEW7=26183
source bench/lib.sh
nginx_confs "$W" $BE $NGP
nginx -c "$W/backend.conf" -g 'daemon off;' & BE_PID=$!
taskset -c 1 nginx -c "$W/ngproxy.conf" -g 'daemon off;' & NG_PID=$!
NODE_PATH="$W/old/node_modules" taskset -c 1 node "$W/js-old/proxy-server.js" $OLD7 $((OLD7 + 100)) $BE > "$W/old7.log" 2>&1 & OLD7_PID=$!
NODE_PATH="$NEW/node_modules" taskset -c 1 node "$W/js-new/proxy-server.js" $NEW7 $((NEW7 + 100)) $BE > "$W/new7.log" 2>&1 & NEW7_PID=$!
for p in $BE $NGP $OLD7 $NEW7; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
NG_W=$(pgrep -P $NG_PID | head -1); NG_W=${NG_W:-$NG_PID}

# --- DNS: the two EdgeMesh DNS servers (1-service catalog), unbound -----------------------------
NAME=nginx-svc.default.svc.cluster.local
echo "$NAME A" > "$W/q.txt"
OLDD=26190; NEWD=26191; UBD=26192
unbound_conf "$W/unbound.conf" $UBD $NAME
taskset -c 1 unbound -d -c "$W/unbound.conf" > "$W/unbound.log" 2>&1 & UB_PID=$!
NODE_PATH="$W/old/node_modules" taskset -c 1 node "$W/js-old/dns-server.js" $OLDD 1 > "$W/oldd.log" 2>&1 & OLDD_PID=$!
NODE_PATH="$NEW/node_modules" taskset -c 1 node "$W/js-new/dns-server.js" $NEWD 1 > "$W/newd.log" 2>&1 & NEWD_PID=$!
for p in $OLDD $NEWD $UBD; do
  for _ in $(seq 1 100); do dig +short +tries=1 +time=1 @127.0.0.1 -p $p $NAME 2>/dev/null | grep -q 198.18.0.1 && break; sleep 0.1; done
done

PROCS="$NG_W $OLD7_PID $NEW7_PID $UB_PID $OLDD_PID $NEWD_PID"
only() { for p in $PROCS; do [ "$p" = "$1" ] || kill -STOP "$p"; done; }
all() { for p in $PROCS; do kill -CONT "$p"; done; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
CLK=$(getconf CLK_TCK)
# "rps cpu-µs-per-request" of PID behind PORT
l7() {
  only "$2"
  local t0 t1 out
  t0=$(ticks "$2")
  out=$(taskset -c 0 wrk -t1 -c50 -d"${SECS}"s "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {r=$2} / requests in / {n=$1} END {print int(r), n}')
  t1=$(ticks "$2")
  all
  read -r rps n <<< "$out"
  echo "$rps $(awk -v d=$((t1 - t0)) -v c="$CLK" -v n="$n" 'BEGIN {printf "%.1f", d/c*1e6/n}')"
}
qps() {
  only "$2"
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$1" -d "$W/q.txt" -c1 -T1 -q100 -l "$SECS" | awk '/Queries per second/ {print int($4)}'
  all
}
# JIT warm-up
for p in $OLD7 $NEW7; do taskset -c 0 wrk -t1 -c50 -d2s "http://127.0.0.1:$p/" > /dev/null; done
for p in $OLDD $NEWD; do taskset -c 0 dnsperf -s 127.0.0.1 -p $p -d "$W/q.txt" -c1 -T1 -q100 -l2 > /dev/null; done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
median() { tr ' ' '\n' <<< "$1" | grep . | sort -n | awk '{v[NR]=$1} END {print (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
NO=""; ON=""; NN=""; CNO=""; DNO=""; DOU=""; DNU=""
echo "paired rounds: wrk -t1 -c50 -d${SECS}s (L7), dnsperf -c1 -T1 -q100 -l$SECS (DNS); node $(node -v)"
printf '%-5s | %-30s | %-30s | %-30s | %s\n' round 'L7 rps old / new / nginx' 'L7 CPU µs/req old / new / ngx' 'DNS QPS old / new / unbound' 'new/old L7, DNS'
for k in $(seq 1 "$PAIRS"); do
  if [ $((k % 2)) -eq 1 ]; then
    read -r ro co <<< "$(l7 $OLD7 $OLD7_PID)"; read -r rn cn <<< "$(l7 $NEW7 $NEW7_PID)"; read -r rg cg <<< "$(l7 $NGP $NG_W)"
    qo=$(qps $OLDD $OLDD_PID); qn=$(qps $NEWD $NEWD_PID); qu=$(qps $UBD $UB_PID)
  else
    read -r rg cg <<< "$(l7 $NGP $NG_W)"; read -r rn cn <<< "$(l7 $NEW7 $NEW7_PID)"; read -r ro co <<< "$(l7 $OLD7 $OLD7_PID)"
    qu=$(qps $UBD $UB_PID); qn=$(qps $NEWD $NEWD_PID); qo=$(qps $OLDD $OLDD_PID)
  fi
  NO="$NO $(ratio "$rn" "$ro")"; ON="$ON $(ratio "$ro" "$rg")"; NN="$NN $(ratio "$rn" "$rg")"; CNO="$CNO $(ratio "$cn" "$co")"
  DNO="$DNO $(ratio "$qn" "$qo")"; DOU="$DOU $(ratio "$qo" "$qu")"; DNU="$DNU $(ratio "$qn" "$qu")"
  printf '%-5s | %-30s | %-30s | %-30s | %s\n' "$k" "$ro / $rn / $rg" "$co / $cn / $cg" "$qo / $qn / $qu" "$(ratio "$rn" "$ro"), $(ratio "$qn" "$qo")"
done
echo "medians ($PAIRS paired rounds):"
echo "  L7 rps: new/old $(median "$NO")   old/nginx $(median "$ON")   new/nginx $(median "$NN")   (new/old per round:$NO)"
echo "  L7 CPU µs per request: new/old $(median "$CNO")   (per round:$CNO)"
echo "  DNS QPS: new/old $(median "$DNO")   old/unbound $(median "$DOU")   new/unbound $(median "$DNU")   (new/old per round:$DNO)"
