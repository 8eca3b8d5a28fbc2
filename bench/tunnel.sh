#!/usr/bin/env bash
# EdgeTunnel against a routed path and a reference TLS relay chain, side by side in one run
# (root; network namespaces the script creates and deletes; nothing in the host namespace):
#   cl 10.9.1.1 ── rl 10.9.1.2 | 10.9.2.1 ── sv 10.9.2.2 (iperf3 -s, nginx, an echo)
#   direct   cl → sv routed through rl (the kernel forwards; no NAT, no TLS)
#   tunnel   cl: a node whose local port rides EdgeTunnel streams (what EdgeMesh's L4 portal does
#            for a backend on another site) → edgerelay on rl → the node on sv → the backend;
#            spliced (the default: TLS end to end between the nodes, the relay joins two plain
#            connections; each node runs the TLS in EdgeMesh's native TLS pump, the client's
#            connection taken by the stream — NATIVE_TLS=0: in Node's TLS, piped) and relayed
#            (TUNNEL_SPLICE=0: HTTP/2 streams on the links, the relay decrypts and re-encrypts)
#   stunnel  cl: stunnel client → haproxy (tcp mode) on rl → stunnel server on sv → the backend
#            (mutual TLS with the same certificates; the reference the issue names)
#   plain    cl: haproxy → haproxy on rl → haproxy on sv → the backend, tcp mode with splice and
#            no TLS: the same four TCP connections as the tunnel and the stunnel chain, nothing
#            else — what this topology can carry on this machine before any encryption
# Prints iperf3 1 and 8 streams, wrk p50 (one connection), the ratios, the machine's busy cores
# and CPU per GB in the 1-stream runs of direct, plain and spliced, the relay's and each node's CPU
# per GB moved, and RSS with 1,000 concurrent streams over one tunnel. Every load is
# bounded in time. PERF=DIR: only a one-stream iperf3 direct and spliced, each under a
# system-wide `perf record` (DIR/direct.data, DIR/spliced.data), with the nodes' CPU per GB.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ "$(id -u)" = 0 ] || { echo "tunnel.sh needs root (network namespaces)"; exit 1; }
for t in iperf3 stunnel4 haproxy nginx wrk node openssl; do command -v $t >/dev/null || [ -x /usr/sbin/$t ] || { echo "missing $t"; exit 1; }; done
[ -f packages/edgetunnel/dist/index.js ] || npm run build >/dev/null
SECS=${SECS:-5}
T=tb$$; CL=${T}cl; RL=${T}rl; SV=${T}sv
W=$(mktemp -d); chmod 755 "$W"
PIDS=()
cleanup() {
  disown -a 2>/dev/null || true
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for ns in $CL $RL $SV; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
x() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
TSNODE="node -r ts-node/register/transpile-only $ROOT/bench/tunnel-node.ts"
wait_ready() { for _ in $(seq 1 100); do grep -q READY "$1" && return 0; sleep 0.1; done; echo "not ready: $1"; cat "$1"; exit 1; }

for ns in $CL $RL $SV; do ip netns add $ns; x $ns ip link set lo up; done
ip link add ${T}a type veth peer name ${T}b
ip link set ${T}a netns $CL; ip link set ${T}b netns $RL
ip link add ${T}c type veth peer name ${T}d
ip link set ${T}c netns $RL; ip link set ${T}d netns $SV
x $CL ip addr add 10.9.1.1/24 dev ${T}a; x $CL ip link set ${T}a up; x $CL ip route add default via 10.9.1.2
x $RL ip addr add 10.9.1.2/24 dev ${T}b; x $RL ip link set ${T}b up
x $RL ip addr add 10.9.2.1/24 dev ${T}c; x $RL ip link set ${T}c up
x $SV ip addr add 10.9.2.2/24 dev ${T}d; x $SV ip link set ${T}d up; x $SV ip route add default via 10.9.2.1
x $RL sysctl -qw net.ipv4.ip_forward=1

C=$W/certs
node packages/edgecore/bin/edgectl certs init --dir "$C" >/dev/null
for n in client server; do node packages/edgecore/bin/edgectl certs node $n --dir "$C" >/dev/null; done
node packages/edgecore/bin/edgectl certs relay relay --dir "$C" --address 10.9.1.2 --address 10.9.2.1 >/dev/null

# the backends on sv
source bench/lib.sh
nginx_confs "$W" 80 8999
sed -i 's/listen 127.0.0.1:80;/listen 10.9.2.2:80;/' "$W/backend.conf"
ip netns exec $SV nginx -c "$W/backend.conf" -g 'daemon off;' & PIDS+=($!)
ip netns exec $SV iperf3 -s -B 10.9.2.2 -p 5201 > /dev/null 2>&1 & PIDS+=($!)
ip netns exec $SV node examples/seed-walkthrough/echo.js serve 10.9.2.2 7000 7001 8081 > /dev/null 2>&1 & PIDS+=($!)

# the tunnel: relay on rl, the server's node on sv, the client's forwarders on cl
ip netns exec $RL env RELAY_KERNEL=${RELAY_KERNEL:-1} $TSNODE relay "$C" relay 0.0.0.0:4443 > "$W/relay.log" 2>&1 & RELAY=$!; PIDS+=($!)
wait_ready "$W/relay.log"
ip netns exec $SV $TSNODE target "$C" server 10.9.2.1:4443 10.9.2.2:5201,10.9.2.2:80,10.9.2.2:7000 > "$W/target.log" 2>&1 & TARGET=$!; PIDS+=($!)
wait_ready "$W/target.log"
ip netns exec $CL $TSNODE forward "$C" client 10.9.1.2:4443 15201 server 10.9.2.2:5201 > "$W/fwd1.log" 2>&1 & FWD1=$!; PIDS+=($!)
ip netns exec $CL $TSNODE forward "$C" client 10.9.1.2:4443 18080 server 10.9.2.2:80 > "$W/fwd2.log" 2>&1 & PIDS+=($!)
ip netns exec $CL env TUNNEL_SPLICE=0 $TSNODE forward "$C" client 10.9.1.2:4443 16201 server 10.9.2.2:5201 > "$W/fwd3.log" 2>&1 & PIDS+=($!)
ip netns exec $CL env TUNNEL_SPLICE=0 $TSNODE forward "$C" client 10.9.1.2:4443 19080 server 10.9.2.2:80 > "$W/fwd4.log" 2>&1 & PIDS+=($!)
for f in fwd1 fwd2 fwd3 fwd4; do wait_ready "$W/$f.log"; done

# the reference chain: stunnel client (cl) → haproxy tcp (rl) → stunnel server (sv)
st_conf() { # file name cert accept connect client?
  cat > "$1" <<CONF
foreground = yes
pid =
debug = 3
[$2]
client = $6
accept = $4
connect = $5
cert = $C/$3.crt
key = $C/$3.key
CAfile = $C/ca.crt
verifyChain = yes
CONF
}
st_conf "$W/stc1.conf" c1 client 127.0.0.1:25201 10.9.1.2:4454 yes
st_conf "$W/stc2.conf" c2 client 127.0.0.1:25080 10.9.1.2:4456 yes
st_conf "$W/sts1.conf" s1 server 10.9.2.2:4445 10.9.2.2:5201 no
st_conf "$W/sts2.conf" s2 server 10.9.2.2:4447 10.9.2.2:80 no
cat > "$W/haproxy.cfg" <<CONF
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen iperf
  bind 10.9.1.2:4454
  server s 10.9.2.2:4445
listen web
  bind 10.9.1.2:4456
  server s 10.9.2.2:4447
CONF
# the plain chain: a haproxy in each namespace (tcp mode, splice, no TLS)
plain_conf() { # file bind server
  cat > "$1" <<CONF
global
  maxconn 1000
defaults
  mode tcp
  option splice-auto
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen plain
  bind $2
  server s $3
CONF
}
plain_conf "$W/plain-cl.cfg" 127.0.0.1:35201 10.9.1.2:4458
plain_conf "$W/plain-rl.cfg" 10.9.1.2:4458 10.9.2.2:4459
plain_conf "$W/plain-sv.cfg" 10.9.2.2:4459 10.9.2.2:5201
for h in cl:$CL rl:$RL sv:$SV; do
  ip netns exec "${h#*:}" haproxy -f "$W/plain-${h%%:*}.cfg" -db > "$W/plain-${h%%:*}.log" 2>&1 & PIDS+=($!)
done
for f in stc1 stc2; do ip netns exec $CL stunnel4 "$W/$f.conf" > "$W/$f.log" 2>&1 & PIDS+=($!); done
for f in sts1 sts2; do ip netns exec $SV stunnel4 "$W/$f.conf" > "$W/$f.log" 2>&1 & PIDS+=($!); done
ip netns exec $RL haproxy -f "$W/haproxy.cfg" -db > "$W/haproxy.log" 2>&1 & PIDS+=($!)
sleep 1

cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
# the machine's busy ticks so far and the wall clock (µs): "ticks µs"
ticks() { echo "$(awk '/^cpu / {print $2 + $3 + $4 + $6 + $7 + $8}' /proc/stat) ${EPOCHREALTIME/./}"; }
since() { local a b n m; read -r a b <<< "$1"; read -r n m <<< "$(ticks)"; echo "$(( n - a )):$(( m - b ))"; } # ticks:µs
gbits() { # ns host port streams [bytes-file] → Gbit/s received; adds the bytes moved to the file
  [ -n "${DEBUG:-}" ] && echo "gbits $*" >&2
  local j
  j=$(x $1 iperf3 -c $2 -p $3 -P $4 -t $SECS -J 2>/dev/null) || { echo 0; echo "$j" | grep -m1 error >&2; return; }
  echo "$j" | python3 -c 'import json,sys; j=json.load(sys.stdin); "error" in j and sys.exit("iperf3 " + sys.argv[2] + ": " + j["error"]); d=j["end"]["sum_received"]; open(sys.argv[1] or "/dev/null","a").write(str(d["bytes"])+"\n"); print("%.2f" % (d["bits_per_second"]/1e9))' "${5:-}" "$2:$3 -P $4" || { [ -n "${DEBUG:-}" ] && for f in "$W"/st*.log "$W"/haproxy.log "$W"/plain-*.log; do echo "== $f"; tail -n 5 "$f"; done >&2; return 1; }
}
p50() { # ns url → wrk p50 in ms (one connection, one thread)
  x $1 wrk -t1 -c1 -d${SECS}s --latency "$2" 2>/dev/null | awk '/^ +50%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f", v}'
}

if [ -n "${PERF:-}" ]; then # PERF=DIR: system-wide profiles of a 1-stream iperf3, direct and spliced, then exit
  mkdir -p "$PERF"
  pergb() { python3 -c "print('%.2f' % ($1 / $(getconf CLK_TCK) / ($(cat "$W/pbytes") / 1e9)))"; } # ticks → s/GB
  for m in direct:10.9.2.2:5201 spliced:127.0.0.1:15201; do
    IFS=: read -r name host port <<< "$m"
    perf record -a -g -q -o "$PERF/$name.data" -- sleep "$SECS" 2>/dev/null & PP=$!
    : > "$W/pbytes"; a=$(cpu $FWD1); b=$(cpu $TARGET)
    g=$(gbits $CL $host $port 1 "$W/pbytes")
    if [ $name = spliced ]; then
      echo "$name $g Gb/s, nodes' CPU per GB: client $(pergb $(( $(cpu $FWD1) - a ))), serving $(pergb $(( $(cpu $TARGET) - b )))"
    else echo "$name $g Gb/s"; fi
    wait $PP
  done
  exit 0
fi
[ -n "${DEBUG:-}" ] && { x $CL iperf3 -c 10.9.2.2 -p 5201 -P 1 -t 1 -J | head -c 600; sleep 1; x $CL iperf3 -c 127.0.0.1 -p 15201 -t 1 | tail -3; }
echo "EdgeTunnel benchmark ($(nproc) cores; ${SECS}s per run; $(date -u +%FT%TZ))"
printf '%-22s %10s %10s %10s %10s %10s\n' "" direct spliced relayed stunnel plain
: > "$W/tbytes"; : > "$W/rbytes"
k0=$(ticks); d1=$(gbits $CL 10.9.2.2 5201 1); kd=$(since "$k0"); d8=$(gbits $CL 10.9.2.2 5201 8)
k0=$(ticks); p1=$(gbits $CL 127.0.0.1 35201 1); kp=$(since "$k0"); p8=$(gbits $CL 127.0.0.1 35201 8)
s1=$(gbits $CL 127.0.0.1 25201 1); s8=$(gbits $CL 127.0.0.1 25201 8)
c0=$(cpu $RELAY); nc0=$(cpu $FWD1); ns0=$(cpu $TARGET)
k0=$(ticks); t1=$(gbits $CL 127.0.0.1 15201 1 "$W/tbytes"); kt=$(since "$k0"); t8=$(gbits $CL 127.0.0.1 15201 8 "$W/tbytes")
c1=$(cpu $RELAY); nc1=$(cpu $FWD1); ns1=$(cpu $TARGET)
r1=$(gbits $CL 127.0.0.1 16201 1 "$W/rbytes"); r8=$(gbits $CL 127.0.0.1 16201 8 "$W/rbytes")
c2=$(cpu $RELAY)
printf '%-22s %10s %10s %10s %10s %10s\n' "iperf3 1 stream Gb/s" "$d1" "$t1" "$r1" "$s1" "$p1"
printf '%-22s %10s %10s %10s %10s %10s\n' "iperf3 8 streams Gb/s" "$d8" "$t8" "$r8" "$s8" "$p8"
lp_d=$(p50 $CL http://10.9.2.2/); lp_t=$(p50 $CL http://127.0.0.1:18080/); lp_r=$(p50 $CL http://127.0.0.1:19080/); lp_s=$(p50 $CL http://127.0.0.1:25080/)
printf '%-22s %10s %10s %10s %10s\n' "wrk -c1 p50 ms" "$lp_d" "$lp_t" "$lp_r" "$lp_s"
python3 - "$d1" "$t1" "$s1" "$d8" "$t8" "$s8" "$lp_d" "$lp_t" "$r1" "$r8" "$lp_r" "$p1" "$p8" "$(getconf CLK_TCK)" "$SECS" "$kd" "$kp" "$kt" <<'PY'
import sys
d1,t1,s1,d8,t8,s8,ld,lt,r1,r8,lr,p1,p8,hz,secs = map(float, sys.argv[1:16])
kd,kp,kt = ([float(x) for x in a.split(':')] for a in sys.argv[16:19])
r = lambda a,b: a/b if b else float('nan')
print(f"ratios: spliced/stunnel 1 stream {r(t1,s1):.2f}x, 8 streams {r(t8,s8):.2f}x (goal >= 1.0); relayed {r(r1,s1):.2f}x, {r(r8,s8):.2f}x")
print(f"        spliced/direct  1 stream {r(t1,d1):.2f}x, 8 streams {r(t8,d8):.2f}x (goal >= 0.5)")
print(f"        plain/direct    1 stream {r(p1,d1):.2f}x, 8 streams {r(p8,d8):.2f}x (the four connections without TLS); spliced/plain {r(t1,p1):.2f}x, {r(t8,p8):.2f}x")
# busy cores over each 1-stream run's wall time (iperf3's own start and end included) and CPU-s
# per GB moved (its rate over its SECS)
per = lambda k, g: f"{k[0] / hz / (k[1] / 1e6):.2f} cores, {k[0] / hz / (g / 8 * secs):.2f} s/GB" if g else "-"
print(f"the machine's CPU in the 1-stream runs: direct {per(kd, d1)}; plain {per(kp, p1)}; spliced {per(kt, t1)}")
print(f"added p50 through one relay: spliced {lt-ld:.3f} ms, relayed {lr-ld:.3f} ms (goal <= 1 ms)")
PY
python3 - "$(( c1 - c0 ))" "$(( c2 - c1 ))" "$(getconf CLK_TCK)" "$W/tbytes" "$W/rbytes" "$(( nc1 - nc0 ))" "$(( ns1 - ns0 ))" <<'PY'
import sys
t, r, hz, nc, ns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[6]), int(sys.argv[7])
gb = lambda f: sum(int(l) for l in open(f) if l.strip()) / 1e9
ts, rs = gb(sys.argv[4]), gb(sys.argv[5])
print(f"relay CPU per GB moved (the iperf3 runs): spliced {t / hz / ts:.2f} s/GB ({ts:.2f} GB), relayed {r / hz / rs:.2f} s/GB ({rs:.2f} GB)")
print(f"node CPU per GB moved spliced (its TLS, the kernel's TCP of its two connections): client {nc / hz / ts:.2f} s/GB, serving {ns / hz / ts:.2f} s/GB")
PY
for m in 1 0; do
  rb=$(ip netns exec $CL env TUNNEL_SPLICE=$m $TSNODE streams "$C" client 10.9.1.2:4443 1000 server 10.9.2.2:7000 2>&1 | grep STREAMS || echo "STREAMS failed")
  echo "$([ $m = 1 ] && echo spliced || echo relayed): $rb"
  echo "  RSS with them open and after: relay $(( $(awk '/VmRSS/ {print $2}' /proc/$RELAY/status) / 1024 )) MiB, serving node $(( $(awk '/VmRSS/ {print $2}' /proc/$TARGET/status) / 1024 )) MiB"
done
