#!/usr/bin/env bash
# DNS benchmark (issue #5): EdgeMesh DNS vs unbound (local-data) vs dnsmasq (--address), all on
# 127.0.0.1 answering the same A record, side by side in one run, twice. Prints QPS, the ratio to
# unbound, and latency at a fixed 10,000 QPS. Servers run on core 1, dnsperf on core 0.
# Usage: bench/dns.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
NAME=nginx-svc.default.svc.cluster.local
WORK=$(mktemp -d)
trap 'kill -CONT $(jobs -p) 2>/dev/null; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
for t in dnsperf unbound dnsmasq taskset; do command -v $t >/dev/null || { echo "missing $t (apt-get install dnsperf unbound dnsmasq-base util-linux)"; exit 1; }; done
npm run build >/dev/null # dist must match src
echo "$NAME A" > "$WORK/q.txt"
PORT_EM1=25353; PORT_EM10K=25354; PORT_UB=25355; PORT_DM=25356

source bench/lib.sh
unbound_conf "$WORK/unbound.conf" $PORT_UB $NAME

start() { # name cmd...
  local name=$1; shift
  taskset -c 1 "$@" > "$WORK/$name.log" 2>&1 &
  echo $! > "$WORK/$name.pid"
}
wait_dns() { # port
  for _ in $(seq 1 100); do dig +short +tries=1 +time=1 @127.0.0.1 -p "$1" $NAME 2>/dev/null | grep -q 198.18.0.1 && return 0; sleep 0.1; done
  echo "server on $1 did not answer"; return 1
}

start em1 node -r ts-node/register/transpile-only bench/dns-server.ts $PORT_EM1 1
start em10k node -r ts-node/register/transpile-only bench/dns-server.ts $PORT_EM10K 10000
start unbound unbound -d -c "$WORK/unbound.conf"
start dnsmasq dnsmasq -k -C /dev/null --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 -p $PORT_DM --address=/$NAME/198.18.0.1 --local-ttl=5
export TS_NODE_PROJECT=bench/tsconfig.json
for p in $PORT_EM1 $PORT_EM10K $PORT_UB $PORT_DM; do wait_dns $p; done
# warm-up (JIT)
for p in $PORT_EM1 $PORT_EM10K; do taskset -c 0 dnsperf -s 127.0.0.1 -p $p -d "$WORK/q.txt" -c1 -T1 -q100 -l2 >/dev/null; done

qps() { taskset -c 0 dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/q.txt" -c1 -T1 -q100 -l "$SECS" | awk '/Queries per second/ {print int($4)}'; }
lat() { # p50 p99 in µs at 10k QPS for 5 s, from dnsperf -v per-query latencies
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/q.txt" -c1 -T1 -q100 -Q 10000 -l 5 -v \
    | awk '$1==">" && $2=="NOERROR" {print $NF*1e6}' | sort -n \
    | awk '{a[NR]=$1} END {if (NR==0) {print "- -"; exit} printf "%d %d\n", a[int(NR*0.5)+1], a[int(NR*0.99)+1]}'
}

declare -A Q L
for run in 1 2; do
  for s in unbound dnsmasq em1 em10k; do
    case $s in unbound) p=$PORT_UB;; dnsmasq) p=$PORT_DM;; em1) p=$PORT_EM1;; em10k) p=$PORT_EM10K;; esac
    # The servers share core 1: the idle ones are stopped while one is measured (an idle Node
    # process's memory-reducing GC would otherwise land in another server's latency run).
    for o in unbound dnsmasq em1 em10k; do [ $o = $s ] || kill -STOP "$(cat "$WORK/$o.pid")"; done
    Q[$s.$run]=$(qps $p)
    L[$s.$run]=$(lat $p)
    for o in unbound dnsmasq em1 em10k; do [ $o = $s ] || kill -CONT "$(cat "$WORK/$o.pid")"; done
  done
done

label() { case $1 in unbound) echo "unbound 1 thread, local-data";; dnsmasq) echo "dnsmasq --address";; em1) echo "EdgeMesh DNS, 1-service catalog";; em10k) echo "EdgeMesh DNS, 10,000-service catalog";; esac; }
echo "DNS bench — one A record, dnsperf -c1 -T1 -q100 -l$SECS, servers on core 1, load on core 0; node $(node -v)"
printf '%-38s | %-5s | %9s | %-8s | %-22s\n' server run QPS 'ratio/ub' 'p50/p99 µs @10k QPS'
printf -- '-%.0s' {1..96}; echo
for run in 1 2; do
  for s in unbound dnsmasq em1 em10k; do
    ratio=$(awk -v a="${Q[$s.$run]}" -v b="${Q[unbound.$run]}" 'BEGIN {printf "%.2f", a/b}')
    printf '%-38s | %-5s | %9s | %-8s | %-22s\n' "$(label $s)" $run "${Q[$s.$run]}" "$ratio" "${L[$s.$run]}"
  done
done
echo "goals: EdgeMesh ≥ 0.90 × unbound QPS (ahead of dnsmasq); p99 ≤ 1000 µs at 10k QPS; 10,000-service catalog ≈ 1-service catalog"
