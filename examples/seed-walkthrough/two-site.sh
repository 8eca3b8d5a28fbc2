#!/usr/bin/env bash
# The walkthrough across two sites behind NAT, over EdgeTunnel (root; network namespaces):
#   cloud    203.0.113.254  mosquitto, relay-1 (:4443); relay-2 on 203.0.113.253 (:4443)
#   site-1   router 203.0.113.1, MASQUERADE for 10.1.0.0/24:
#              node a 10.1.0.1 (a container 172.17.0.2 behind docker0), node c 10.1.0.3 (nginx)
#   site-2   router 203.0.113.2, MASQUERADE for 10.2.0.0/24:
#              node b 10.2.0.2 (nginx, a TCP/UDP/WebSocket echo: the pods)
# The cloud has no route into either site, and neither site into the other: the only way from a
# to b is the nodes' outbound links to the relays. Everything it creates is removed on exit;
# nothing is changed in the host namespace. Prints each step; exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
[ "$(id -u)" = 0 ] || { echo "two-site.sh needs root (network namespaces, iptables)"; exit 1; }
for t in ip iptables-save mosquitto nginx curl dig node openssl; do command -v $t >/dev/null || [ -x /usr/sbin/$t ] || { echo "missing $t"; exit 1; }; done
[ -f packages/edgecore/dist/cli/edgecore.js ] && [ -f packages/edgetunnel/dist/cli/edgerelay.js ] || npm run build >/dev/null

T=ts$$
CLOUD=${T}cl; R1=${T}r1; R2=${T}r2; A=${T}a; B=${T}b; C=${T}c; CTR=${T}ct
W=$(mktemp -d); chmod 755 "$W"
PIDS=()
cleanup() {
  disown -a 2>/dev/null || true
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for ns in $CTR $A $B $C $R1 $R2 $CLOUD; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
    rm -rf /etc/netns/$ns
  done
  rm -rf "$W"
}
trap cleanup EXIT
fail() { printf "    FAILED: %s\n" "$*"; [ -n "${KEEP_LOGS:-}" ] && cp -r "$W" "$KEEP_LOGS"; for f in "$W"/*.log; do echo "--- $f"; tail -n 15 "$f"; done; exit 1; }
EDGECORE="$ROOT/packages/edgecore/bin/edgecore"
source examples/seed-walkthrough/lib.sh
EDGECTL="$ROOT/packages/edgecore/bin/edgectl"
EDGERELAY="$ROOT/packages/edgetunnel/bin/edgerelay"
ECHO="$ROOT/examples/seed-walkthrough/echo.js"

step "network: the cloud's public segment, two NAT'd sites, a container on node a"
for ns in $CLOUD $R1 $R2 $A $B $C $CTR; do ip netns add $ns; x $ns ip link set lo up; done
x $CLOUD ip link add br0 type bridge
x $CLOUD ip addr add 203.0.113.254/24 dev br0
x $CLOUD ip addr add 203.0.113.253/24 dev br0
x $CLOUD ip link set br0 up
site() { # router n: uplink 203.0.113.n, LAN 10.n.0.254/24 behind MASQUERADE
  local r=$1 n=$2
  x $CLOUD ip link add up$n type veth peer name wan netns $r
  x $CLOUD ip link set up$n master br0
  x $CLOUD ip link set up$n up
  x $r ip addr add 203.0.113.$n/24 dev wan
  x $r ip link set wan up
  x $r ip link add lan type bridge
  x $r ip addr add 10.$n.0.254/24 dev lan
  x $r ip link set lan up
  x $r sysctl -qw net.ipv4.ip_forward=1
  x $r iptables -t nat -A POSTROUTING -s 10.$n.0.0/24 -o wan -j MASQUERADE
}
site $R1 1
site $R2 2
node_in() { # router n node host
  x $1 ip link add v$4 type veth peer name eth0 netns $3
  x $1 ip link set v$4 master lan
  x $1 ip link set v$4 up
  x $3 ip addr add 10.$2.0.$4/24 dev eth0
  x $3 ip link set eth0 up
  x $3 ip route add default via 10.$2.0.254
  mkdir -p /etc/netns/$3; echo "nameserver 203.0.113.254" > /etc/netns/$3/resolv.conf
}
node_in $R1 1 $A 1
node_in $R1 1 $C 3
node_in $R2 2 $B 2
x $A ip link add docker0 type bridge
x $A ip addr add 172.17.0.1/16 dev docker0
x $A ip link set docker0 up
x $A ip link add vethctr type veth peer name eth0 netns $CTR
x $A ip link set vethctr master docker0
x $A ip link set vethctr up
x $CTR ip addr add 172.17.0.2/16 dev eth0
x $CTR ip link set eth0 up
x $CTR ip route add default via 172.17.0.1
mkdir -p /etc/netns/$CTR; echo "nameserver 203.0.113.254" > /etc/netns/$CTR/resolv.conf
x $A sysctl -qw net.ipv4.ip_forward=1
ok "site-1 10.1.0.0/24 (a, c) and site-2 10.2.0.0/24 (b) behind MASQUERADE; the cloud routes to neither"

step "pods: nginx and the echo servers on node b, nginx on node c"
nginx_on $B 10.2.0.2 edge-node-b 256
nginx_on $C 10.1.0.3 edge-node-c
ip netns exec $B node "$ECHO" serve 10.2.0.2 7000 7001 8081 8082 > "$W/echo.log" 2>&1 & PIDS+=($!)
sleep 0.5
x $B curl -s --max-time 3 http://10.2.0.2/ | grep -q 'served by edge-node-b' && ok "nginx on 10.2.0.2:80 (site-2)" || fail "nginx on node b"
if x $A curl -s --max-time 2 http://10.2.0.2/ >/dev/null; then fail "node a reaches node b's address: the sites are not separate"; fi
ok "node a cannot reach 10.2.0.2 (no route between the sites, as in the field)"

step "certificates: a fleet CA, nodes a b c, two relays (edgectl certs)"
CERTS=$W/certs
node "$EDGECTL" certs init --dir "$CERTS" | sed 's/^/    /'
for n in edge-node-a edge-node-b edge-node-c; do node "$EDGECTL" certs node $n --dir "$CERTS" | sed 's/^/    /'; done
node "$EDGECTL" certs relay relay-1 --dir "$CERTS" --address 203.0.113.254 | sed 's/^/    /'
node "$EDGECTL" certs relay relay-2 --dir "$CERTS" --address 203.0.113.253 | sed 's/^/    /'
[ "$(stat -c %a "$CERTS/edge-node-a.key")" = 600 ] && ok "keys are 0600" || fail "key mode"

step "cloud: mosquitto and two relays"
cat > "$W/mosquitto.conf" <<CONF
listener 1883 203.0.113.254
allow_anonymous true
persistence true
persistence_location $W/
user root
CONF
start_mosquitto() { ip netns exec $CLOUD mosquitto -c "$W/mosquitto.conf" > "$W/mosquitto.log" 2>&1 & MQ_PID=$!; PIDS+=($MQ_PID); sleep 0.5; }
start_mosquitto
start_relay() { # name address
  ip netns exec $CLOUD node "$EDGERELAY" --name $1 --listen $2:4443 --cert "$CERTS/$1.crt" --key "$CERTS/$1.key" \
    --ca "$CERTS/ca.crt" --revoked "$CERTS/revoked.json" > "$W/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do grep -q 'relay listening' "$W/$1.log" && return 0; sleep 0.1; done
  fail "$1 did not start"
}
start_relay relay-1 203.0.113.254; RELAY1=${PIDS[-1]}
start_relay relay-2 203.0.113.253; RELAY2=${PIDS[-1]}
ok "mosquitto 203.0.113.254:1883, relay-1 203.0.113.254:4443, relay-2 203.0.113.253:4443"

step "edgecore on a, c (site-1) and b (site-2), iptables mode, EdgeTunnel to both relays"
edgecore_cfg() { # node ifc site
  edgecore_yaml $1 $2 203.0.113.254
  cat >> "$W/$1.yaml" <<CONF
  edgeTunnel:
    enable: true
    site: $3
    relays: [203.0.113.254:4443, 203.0.113.253:4443]
    certFile: $CERTS/$1.crt
    keyFile: $CERTS/$1.key
    caFile: $CERTS/ca.crt
    pingIntervalMs: 500
CONF
}
declare -A EC
edgecore_cfg edge-node-a docker0 site-1
edgecore_cfg edge-node-b edgemesh0 site-2
edgecore_cfg edge-node-c edgemesh0 site-1
start_edgecore $A edge-node-a
start_edgecore $B edge-node-b
start_edgecore $C edge-node-c
for _ in $(seq 1 50); do grep -q '"relay: node linked (reverse)".*edge-node-b\|edge-node-b.*"relay: node linked' "$W/relay-2.log" && break; sleep 0.1; done
ok "three nodes ready"

step "cloud: the services (edgectl apply): nginx, echo (TCP, UDP), WebSocket on b; nginx-c on c"
cat > "$W/objects.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: { name: nginx-b, namespace: default, labels: { app: nginx } }
spec:
  nodeName: edge-node-b
  hostNetwork: true
  containers: [{ name: nginx, ports: [{ containerPort: 80, hostPort: 80 }] }]
---
apiVersion: v1
kind: Service
metadata: { name: nginx-svc, namespace: default }
spec: { clusterIP: None, selector: { app: nginx }, ports: [{ name: http-0, port: 12345, targetPort: 80 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: echo-b, namespace: default, labels: { app: echo } }
spec:
  nodeName: edge-node-b
  hostNetwork: true
  containers:
    - name: echo
      ports:
        - { name: tcp, containerPort: 7000, hostPort: 7000 }
        - { name: udp, containerPort: 7001, hostPort: 7001, protocol: UDP }
        - { name: ws, containerPort: 8081, hostPort: 8081 }
        - { name: h2c, containerPort: 8082, hostPort: 8082 }
---
apiVersion: v1
kind: Service
metadata: { name: echo-svc, namespace: default }
spec:
  clusterIP: None
  selector: { app: echo }
  ports:
    - { name: tcp-echo, port: 7000, targetPort: 7000 }
    - { name: udp-echo, port: 7001, targetPort: 7001, protocol: UDP }
    - { name: http-ws, port: 8080, targetPort: 8081 }
    - { name: h2c, port: 50051, targetPort: 8082, appProtocol: kubernetes.io/h2c }
---
apiVersion: v1
kind: Pod
metadata: { name: nginx-c, namespace: default, labels: { app: nginx-c } }
spec:
  nodeName: edge-node-c
  hostNetwork: true
  containers: [{ name: nginx, ports: [{ containerPort: 80, hostPort: 80 }] }]
---
apiVersion: v1
kind: Service
metadata: { name: nginx-c, namespace: default }
spec: { clusterIP: None, selector: { app: nginx-c }, ports: [{ name: http-0, port: 12345, targetPort: 80 }] }
YAML
x $CLOUD node "$EDGECTL" --server tcp://203.0.113.254:1883 apply -f "$W/objects.yaml" \
  --node-ip edge-node-b=10.2.0.2 --node-ip edge-node-c=10.1.0.3 | sed 's/^/    /'
for _ in $(seq 1 100); do x $A curl -s http://127.0.0.1:10550/api/v1/namespaces/default/services/nginx-c | grep -q 12345 && break; sleep 0.1; done
for _ in $(seq 1 100); do x $A curl -s http://127.0.0.1:10550/api/v1/namespaces/kube-node-lease/nodestatus/edge-node-b 2>/dev/null | grep -q site-2 && break; sleep 0.1; done

streams() { # node: streams it opened through the tunnel
  x $1 curl -s http://127.0.0.1:10351/metrics | awk '/^edgecore_edgetunnel_streams_total\{result="opened"/ {s+=$2} END {print s+0}'
}
url=http://nginx-svc.default.svc.cluster.local:12345
step "from node a's host and its container: nginx on b (site-2) through the tunnel"
for ns in $A $CTR; do
  page=""
  for _ in $(seq 1 50); do page=$(x $ns curl -s --max-time 5 $url || true); echo "$page" | grep -q 'served by edge-node-b' && break; sleep 0.2; done
  echo "$page" | grep -q 'served by edge-node-b' || fail "$ns: curl $url: '$page'"
  ok "$( [ $ns = $A ] && echo 'node a' || echo container): curl $url → served by edge-node-b"
done
[ "$(streams $A)" -gt 0 ] && ok "node a opened $(streams $A) tunnel streams" || fail "no tunnel stream counted"
sp=$(x $A curl -s http://127.0.0.1:10351/metrics | awk '/^edgecore_edgetunnel_streams_total\{/ && /result="opened"/ && /via="spliced"/ {print $2+0}')
[ "${sp:-0}" -gt 0 ] && ok "$sp of them spliced: TLS end to end a ↔ b, the relay joins two outbound connections" \
  || fail "no spliced stream (relay-1: $(grep -m1 'spliced streams' "$W/relay-1.log"))"

step "L4 echo, UDP echo, a WebSocket and HTTP/2 from node a to b"
r=$(x $A node "$ECHO" tcp echo-svc.default.svc.cluster.local 7000 hello-l4) || fail "tcp echo"
[ "$r" = hello-l4 ] && ok "TCP echo-svc:7000 → '$r' (after a half-close)" || fail "tcp echo: '$r'"
r=$(x $CTR node "$ECHO" udp echo-svc.default.svc.cluster.local 7001 hello-udp) || fail "udp echo"
[ "$r" = echo:hello-udp ] && ok "UDP echo-svc:7001 from the container → '$r'" || fail "udp echo: '$r'"
r=$(x $A node "$ECHO" ws echo-svc.default.svc.cluster.local 8080 hello-ws) || fail "websocket"
[ "$r" = hello-ws ] && ok "WebSocket echo-svc:8080 (L7 upgrade) → '$r'" || fail "websocket: '$r'"
r=$(x $A curl -s --max-time 5 --http2-prior-knowledge http://echo-svc.default.svc.cluster.local:50051/) || fail "h2c"
[ "$r" = h2-echo:2.0 ] && ok "HTTP/2 (h2c) echo-svc:50051 through the HTTP/2 portal, over the tunnel → '$r'" || fail "h2c: '$r'"
metric() { # node name{labels} → its value (0 when absent)
  x $1 curl -s http://127.0.0.1:10351/metrics | awk -v m="$2" 'index($0, m " ") == 1 {v=$2} END {print v+0}'
}
if [ "$(metric $A edgecore_dns_udp_native)" = 1 ]; then # EdgeMesh's native addon is built here
  nt=$(metric $A edgecore_edgetunnel_native_tls_streams_total)
  jn=$(metric $A 'edgecore_proxy_spliced_connections_total{kind="tunnel"}')
  [ "$nt" -gt 0 ] && [ "$jn" -gt 0 ] \
    && ok "$nt spliced streams' TLS in the native pump; $jn L4 connection(s) taken by the stream itself (no byte through JavaScript)" \
    || fail "native TLS streams: $nt, L4 connections joined: $jn"
else
  ok "no native addon here: the spliced streams' TLS runs in Node"
fi

step "node a's view of the paths (edgectl get endpoints -o wide)"
x $A node "$EDGECTL" get endpoints -o wide | sed 's/^/    /'
x $A node "$EDGECTL" get endpoints -o wide | grep -q 'nginx-svc .*10.2.0.2:80 .*edge-node-b .*tunnel' || fail "nginx-svc not shown through the tunnel"
x $A node "$EDGECTL" get endpoints -o wide | grep -q 'nginx-c .*10.1.0.3:80 .*edge-node-c .*direct' || fail "nginx-c not shown direct"
ok "nginx-svc → edge-node-b: tunnel; nginx-c → edge-node-c: direct"

step "c's backend (same site) is reached directly: no tunnel stream"
before=$(streams $A)
for _ in 1 2 3; do x $A curl -s --max-time 5 http://nginx-c.default.svc.cluster.local:12345 | grep -q 'served by edge-node-c' || fail "nginx-c"; done
[ "$(streams $A)" = "$before" ] && ok "3 requests to nginx-c, tunnel streams still $before" || fail "nginx-c went through the tunnel"

step "refused: another CA's certificate, and a stream to an address b does not publish"
mkdir -p "$W/evil"; node "$EDGECTL" certs init --dir "$W/evil" >/dev/null; node "$EDGECTL" certs node edge-node-a --dir "$W/evil" >/dev/null
if x $A curl -s --max-time 3 --http2 --cert "$W/evil/edge-node-a.crt" --key "$W/evil/edge-node-a.key" --cacert "$CERTS/ca.crt" https://203.0.113.254:4443/ >/dev/null 2>&1; then
  fail "relay-1 accepted a certificate of another CA"
fi
grep -q 'TLS handshake refused' "$W/relay-1.log" && ok "relay-1 refused the other CA's certificate at the handshake" || fail "no refusal logged"
r=$(x $A node "$ECHO" probe "$CERTS" edge-node-a 203.0.113.254:4443 edge-node-b 10.2.0.2 22)
[[ $r == TUNNEL_REFUSED* ]] && ok "stream to 10.2.0.2:22 (no published backend): $r" || fail "probe: '$r'"
r=$(x $A node "$ECHO" probe "$CERTS" edge-node-a 203.0.113.254:4443 edge-node-b 10.2.0.254 80)
[[ $r == TUNNEL_REFUSED* ]] && ok "stream to b's router 10.2.0.254:80: $r" || fail "probe: '$r'"

step "kill relay-1 under load: new requests go through relay-2"
( for i in $(seq 1 300); do x $A curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 $url; done > "$W/load.txt" ) & LOAD=$!; PIDS+=($LOAD)
sleep 1
kill -9 $RELAY1; ok "relay-1 killed (pid $RELAY1)"
sleep 1
after=0; for i in $(seq 1 20); do [ "$(x $A curl -s -o /dev/null -w '%{http_code}' --max-time 5 $url)" = 200 ] && after=$((after+1)); done
wait $LOAD || true
[ $after = 20 ] && ok "20 of 20 new requests after the kill: 200 (load: $(grep -c '^200$' "$W/load.txt")/$(wc -l < "$W/load.txt") 200s)" || fail "only $after of 20 after the kill"

step "stop mosquitto: still served"
kill $MQ_PID; wait $MQ_PID 2>/dev/null || true
for ns in $A $CTR; do x $ns curl -s --max-time 5 $url | grep -q 'served by edge-node-b' || fail "$ns offline"; done
ok "node a and its container: served by edge-node-b with the cloud broker down"

step "revoke node c: the relay cuts it off"
before=$(x $C curl -s -o /dev/null -w '%{http_code}' --max-time 5 $url)
[ "$before" = 200 ] && ok "node c reaches nginx-svc through the tunnel before" || fail "node c: $before"
node "$EDGECTL" certs revoke edge-node-c --dir "$CERTS" | sed 's/^/    /'
# the cloud back, the deny list goes to every node too (a ConfigMap, like other objects)
start_mosquitto
node "$EDGECTL" certs configmap --dir "$CERTS" | x $CLOUD node "$EDGECTL" --server tcp://203.0.113.254:1883 apply -f - | sed 's/^/    /'
for _ in $(seq 1 200); do grep -q '"entries":1,"msg":"edgetunnel: deny list from the cloud"' "$W/edge-node-b.log" && break; sleep 0.1; done
grep -q '"entries":1,"msg":"edgetunnel: deny list from the cloud"' "$W/edge-node-b.log" && ok "node b holds the cloud's deny list (1 entry)" || fail "node b did not get the deny list"
for _ in $(seq 1 50); do grep -q '"node":"edge-node-c".*revoked\|revoked.*edge-node-c' "$W/relay-2.log" && break; sleep 0.1; done
sleep 1
code=$(x $C curl -s -o /dev/null -w '%{http_code}' --max-time 5 $url)
[ "$code" = 502 ] || [ "$code" = 503 ] && ok "node c after revocation: $code, fast" || fail "revoked node c got $code"
x $A curl -s --max-time 5 $url | grep -q 'served by edge-node-b' && ok "node a still served" || fail "node a after c's revocation"

step "relay-2 down too: cross-site fails fast, same-site unaffected"
kill -9 $RELAY2
sleep 1
t0=$(date +%s%N); code=$(x $A curl -s -o /dev/null -w '%{http_code}' --max-time 10 $url); t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
[ "$code" = 502 ] || [ "$code" = 503 ] || fail "cross-site with no relay: $code"
[ $ms -lt 3000 ] && ok "cross-site with no relay: $code in ${ms} ms" || fail "took ${ms} ms"
r=$(x $A node "$ECHO" tcp echo-svc.default.svc.cluster.local 7000 x 2>&1 || true)
[ "$r" = "tcp: ECONNRESET" ] && ok "L4 echo with no relay: connection reset at once ($r)" || fail "L4 with no relay: '$r'"
x $A curl -s --max-time 5 http://nginx-c.default.svc.cluster.local:12345 | grep -q 'served by edge-node-c' && ok "nginx-c (same site) still served" || fail "same site broken"

step "stop edgecore on every node"
for n in edge-node-a edge-node-b edge-node-c; do kill -TERM "${EC[$n]}"; wait "${EC[$n]}" 2>/dev/null || true; done
for ns in $A $B $C; do x $ns iptables-save -t nat | grep -q EDGEMESH && fail "rules left on $ns" || true; done
ok "no EdgeMesh rule left"
printf '\nALL STEPS PASSED\n'
