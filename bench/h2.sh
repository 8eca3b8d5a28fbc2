#!/usr/bin/env bash
# HTTP/2 benchmark (issue #22), side by side in one run against the same h2c backend (nginx
# `listen … http2`, a 600-byte page): direct, EdgeMesh's HTTP/2 portal (bench/h2-server.ts: the real
# H2Proxy), nginx as an HTTP/2 proxy (grpc_pass to the h2c backend) and haproxy (`proto h2` on both
# sides). Each proxy is pinned to core 1, h2load to core 0.
# Prints, per path: h2load -c 50 -m 10 requests/s, p50/p99 (from h2load's per-request log), CPU µs
# per request of the proxy; then a gRPC unary load (h2load POSTs of a framed gRPC message to a
# grpc-js server) direct / EdgeMesh / nginx / haproxy; then the spread of ONE client connection
# (h2load -c 1 -m 10) over three backends through EdgeMesh (RoundRobin: each within ±10 % of even).
# Goals: requests/s ≥ 1.0 × the faster of nginx and haproxy; CPU per request ≤ theirs; spread ±10 %.
# Usage: bench/h2.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
W=$(mktemp -d)
chmod 755 "$W"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.2; rm -rf "$W"' EXIT
for t in h2load nginx haproxy taskset curl; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done
npm run build >/dev/null
npx tsc -p bench/tsconfig.json --noEmit false --outDir "$W/js"
export NODE_PATH="$PWD/node_modules"
BE=26180; BE2=26181; BE3=26182; EM=26183; NGP=26184; HAP=26185; GB=26186; EMG=26187; NGG=26188; HAG=26189; EM3=26190; BE4=26191
mkdir -p "$W/www"; chmod 755 "$W/www"
python3 -c "print('<!DOCTYPE html><title>bench</title><p>' + 'x'*540 + '</p>')" > "$W/www/index.html"
chmod 644 "$W/www/index.html"
TMPD="client_body_temp_path $W/cb; proxy_temp_path $W/pt; fastcgi_temp_path $W/ft; uwsgi_temp_path $W/ut; scgi_temp_path $W/st;"
cat > "$W/backend.conf" <<CONF
worker_processes 1; pid $W/be.pid; error_log $W/be.err;
events { worker_connections 4096; }
http { access_log off; $TMPD keepalive_requests 1000000; http2_max_concurrent_streams 1000;
  log_format n '\$server_port';
  server { listen 127.0.0.1:$BE http2; root $W/www; }
  server { listen 127.0.0.1:$BE2 http2; root $W/www; access_log $W/spread.log n; }
  server { listen 127.0.0.1:$BE3 http2; root $W/www; access_log $W/spread.log n; }
  server { listen 127.0.0.1:$BE4 http2; root $W/www; access_log $W/spread.log n; } }
CONF
cat > "$W/ngproxy.conf" <<CONF
worker_processes 1; pid $W/ng.pid; error_log $W/ng.err;
events { worker_connections 4096; }
http { access_log off; $TMPD keepalive_requests 1000000; http2_max_concurrent_streams 1000;
  upstream be { server 127.0.0.1:$BE; keepalive 64; }
  upstream gb { server 127.0.0.1:$GB; keepalive 64; }
  server { listen 127.0.0.1:$NGP http2; location / { grpc_pass grpc://be; } }
  server { listen 127.0.0.1:$NGG http2; location / { grpc_pass grpc://gb; } } }
CONF
cat > "$W/haproxy.cfg" <<CONF
global
  maxconn 4000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$HAP proto h2
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$BE proto h2
frontend fg
  bind 127.0.0.1:$HAG proto h2
  default_backend bg
backend bg
  http-reuse always
  server s1 127.0.0.1:$GB proto h2
CONF
nginx -c "$W/backend.conf" -g 'daemon off;' &
node "$W/js/h2-grpc-backend.js" $GB > "$W/gb.log" 2>&1 &
taskset -c 1 nginx -c "$W/ngproxy.conf" -g 'daemon off;' & NG_PID=$!
taskset -c 1 haproxy -f "$W/haproxy.cfg" -db > "$W/haproxy.log" 2>&1 & HA_PID=$!
# EM_NODE_FLAGS: node flags for the measured EdgeMesh portal (e.g. --cpu-prof --cpu-prof-dir=DIR)
taskset -c 1 node ${EM_NODE_FLAGS:-} "$W/js/h2-server.js" $EM $BE > "$W/em.log" 2>&1 & EM_PID=$!
taskset -c 1 node "$W/js/h2-server.js" $EMG $GB > "$W/emg.log" 2>&1 & EMG_PID=$!
node "$W/js/h2-server.js" $EM3 $BE2 $BE3 $BE4 > "$W/em3.log" 2>&1 &
for p in $BE $EM $NGP $HAP $EM3; do
  for _ in $(seq 1 100); do curl -s -o /dev/null --http2-prior-knowledge "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
for _ in $(seq 1 100); do grep -q ready "$W/gb.log" && break; sleep 0.1; done
NG_W=$(pgrep -P $NG_PID | head -1)
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)
# h2run URL PID [h2load args…] → "rps p50us p99us requests"
h2run() {
  local url=$1 pid=$2; shift 2
  local t0=0 t1=0 out
  [ "$pid" != 0 ] && t0=$(ticks "$pid")
  out=$(taskset -c 0 h2load -c 50 -m 10 -D "$SECS" --warm-up-time=1 --log-file="$W/req.log" "$@" "$url" 2>&1)
  [ "$pid" != 0 ] && t1=$(ticks "$pid")
  local rps n
  rps=$(echo "$out" | awk '/finished in/ {gsub(",", "", $4); print int($4)}')
  n=$(echo "$out" | awk '/^requests:/ {print $8}')
  read -r p50 p99 <<< "$(awk '{print $3}' "$W/req.log" | sort -n | awk '{a[NR]=$1} END {printf "%d %d\n", a[int(NR*0.5)], a[int(NR*0.99)]}')"
  local cpu=0
  [ "$pid" != 0 ] && cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
  echo "$rps $p50 $p99 $n $cpu"
}
echo "h2 bench — h2load -c 50 -m 10 -D ${SECS}s, proxies on core 1, h2load on core 0; node $(node -v), nginx $(nginx -v 2>&1 | cut -d/ -f2), haproxy $(haproxy -v | head -1 | awk '{print $3}')"
printf '%-26s| %9s| %13s| %10s| %s\n' path 'req/s' 'p50/p99 µs' 'CPU µs/req' 'succeeded'
declare -A R C
row() { # name url pid [args]
  local name=$1 url=$2 pid=$3; shift 3
  read -r rps p50 p99 n cpu <<< "$(h2run "$url" "$pid" "$@")"
  R[$name]=$rps; C[$name]=$cpu
  printf '%-26s| %9s| %13s| %10s| %s\n' "$name" "$rps" "$p50/$p99" "$cpu" "$n"
}
row direct "http://127.0.0.1:$BE/" 0
row edgemesh "http://127.0.0.1:$EM/" $EM_PID
row nginx "http://127.0.0.1:$NGP/" "$NG_W"
row haproxy "http://127.0.0.1:$HAP/" $HA_PID
# gRPC unary: a 5-byte gRPC frame holding "hello"
printf '\x00\x00\x00\x00\x05hello' > "$W/grpc.bin"
G=(-d "$W/grpc.bin" -H 'content-type: application/grpc' -H 'te: trailers')
row 'grpc direct' "http://127.0.0.1:$GB/test.Echo/Unary" 0 "${G[@]}"
row 'grpc edgemesh' "http://127.0.0.1:$EMG/test.Echo/Unary" $EMG_PID "${G[@]}"
row 'grpc nginx' "http://127.0.0.1:$NGG/test.Echo/Unary" "$NG_W" "${G[@]}"
row 'grpc haproxy' "http://127.0.0.1:$HAG/test.Echo/Unary" $HA_PID "${G[@]}"
best=$(( R[nginx] > R[haproxy] ? R[nginx] : R[haproxy] ))
awk -v e="${R[edgemesh]}" -v b="$best" -v ce="${C[edgemesh]}" -v cn="${C[nginx]}" -v ch="${C[haproxy]}" \
  'BEGIN {printf "edgemesh / faster of nginx, haproxy: %.2f× requests/s (goal ≥ 1.0); CPU µs/request %s vs nginx %s, haproxy %s\n", e / b, ce, cn, ch}'
bestg=$(( R['grpc nginx'] > R['grpc haproxy'] ? R['grpc nginx'] : R['grpc haproxy'] ))
awk -v e="${R['grpc edgemesh']}" -v b="$bestg" 'BEGIN {printf "gRPC unary: edgemesh / faster of nginx, haproxy: %.2f×\n", e / b}'
# the spread of one client connection over three backends
: > "$W/spread.log"
taskset -c 0 h2load -n 30000 -c 1 -m 10 "http://127.0.0.1:$EM3/" > /dev/null
sleep 0.5
sort "$W/spread.log" | uniq -c | awk '{n[NR]=$1; t+=$1} END {printf "one connection, 30000 requests over three backends: %d / %d / %d (each %.1f%% off even; goal ±10%%)\n", n[1], n[2], n[3], 100 * ((n[1] > n[2] ? (n[1] > n[3] ? n[1] : n[3]) : (n[2] > n[3] ? n[2] : n[3])) - t / 3) / (t / 3)}'
