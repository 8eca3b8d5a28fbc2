#!/usr/bin/env bash
# The seed's EdgeMesh walkthrough, end to end, on one machine, with network namespaces (root).
#   cloud        192.0.2.254  mosquitto (the cloud) and dnsmasq (the upstream DNS); the bridge
#   edge-node-a  192.0.2.1    edgecore (iptables mode), docker0 172.17.0.1/16 + a container
#   edge-node-b  192.0.2.2    edgecore, and nginx on its host address (the pod, hostPort 80)
#   edge-node-c  192.0.2.3    a second nginx, later
# Everything it creates (namespaces, /etc/netns/<ns>, processes, a temp dir) is removed on exit.
# Nothing is changed in the host namespace. Prints each step; exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
[ "$(id -u)" = 0 ] || { echo "run.sh needs root (network namespaces, iptables)"; exit 1; }
for t in ip iptables-save mosquitto nginx dnsmasq curl dig getent node; do command -v $t >/dev/null || [ -x /usr/sbin/$t ] || { echo "missing $t"; exit 1; }; done
[ -f packages/edgecore/dist/cli/edgecore.js ] || npm run build >/dev/null

T=sw$$            # unique per run: parallel runs do not collide
CLOUD=${T}cl; A=${T}a; B=${T}b; C=${T}c; CTR=${T}ct; CTRB=${T}cb
W=$(mktemp -d); chmod 755 "$W"
PIDS=()
cleanup() {
  disown -a 2>/dev/null || true   # no "Killed" job notices
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for ns in $CTR $CTRB $A $B $C $CLOUD; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
    rm -rf /etc/netns/$ns
  done
  rm -rf "$W"
}
trap cleanup EXIT
fail() { printf '    FAILED: %s\n' "$*"; exit 1; }
EDGECORE="$ROOT/packages/edgecore/bin/edgecore"
source examples/seed-walkthrough/lib.sh
EDGECTL="$ROOT/packages/edgecore/bin/edgectl"

step "network: cloud bridge, three edge nodes, a container on node a (docker0) and on node b (cni0)"
for ns in $CLOUD $A $B $C $CTR $CTRB; do ip netns add $ns; x $ns ip link set lo up; done
x $CLOUD ip link add br0 type bridge
x $CLOUD ip addr add 192.0.2.254/24 dev br0
x $CLOUD ip link set br0 up
i=1
for ns in $A $B $C; do
  x $CLOUD ip link add veth$i type veth peer name eth0 netns $ns
  x $CLOUD ip link set veth$i master br0
  x $CLOUD ip link set veth$i up
  x $ns ip addr add 192.0.2.$i/24 dev eth0
  x $ns ip link set eth0 up
  mkdir -p /etc/netns/$ns; echo "nameserver 192.0.2.254" > /etc/netns/$ns/resolv.conf
  i=$((i+1))
done
# no route to 172.17.0.0/16 or 169.254.96.16 here, as at any real resolver: EdgeMesh masquerades
# its own upstream DNS queries
container_on() { # node container bridge bridge-ip/prefix container-ip veth: a container behind a bridge
  local gw=${4%/*} prefix=${4#*/}
  x $1 ip link add $3 type bridge
  x $1 ip addr add $4 dev $3
  x $1 ip link set $3 up
  x $1 ip link add $6 type veth peer name eth0 netns $2
  x $1 ip link set $6 master $3
  x $1 ip link set $6 up
  x $2 ip addr add $5/$prefix dev eth0
  x $2 ip link set eth0 up
  x $2 ip route add default via $gw
  mkdir -p /etc/netns/$2; echo "nameserver 192.0.2.254" > /etc/netns/$2/resolv.conf
}
container_on $A $CTR docker0 172.17.0.1/16 172.17.0.2 vethctr
x $A sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 >/dev/null 2>&1 || true
# node b has no docker0 (EdgeMesh listens on edgemesh0); its container sits on a CNI bridge
container_on $B $CTRB cni0 10.88.0.1/16 10.88.0.2 vethcb
ok "cloud 192.0.2.254, nodes 192.0.2.1-3, container 172.17.0.2 behind docker0 on node a, 10.88.0.2 behind cni0 on node b"

step "cloud: mosquitto and an upstream DNS (dnsmasq knows www.example.test)"
cat > "$W/mosquitto.conf" <<CONF
listener 1883 192.0.2.254
allow_anonymous true
persistence true
persistence_location $W/
user root
CONF
# Background processes are started with `ip netns exec` itself (not through a function), so that
# $! is the server's own pid: ip netns exec execs the program.
start_mosquitto() { ip netns exec $CLOUD mosquitto -c "$W/mosquitto.conf" > "$W/mosquitto.log" 2>&1 & MQ_PID=$!; PIDS+=($MQ_PID); sleep 0.5; }
start_mosquitto
ip netns exec $CLOUD dnsmasq -k -C /dev/null --no-resolv --no-hosts --bind-interfaces --listen-address=192.0.2.254 --address=/example.test/192.0.2.200 --local-ttl=5 > "$W/dnsmasq.log" 2>&1 & PIDS+=($!)
ok "mosquitto on 192.0.2.254:1883, dnsmasq on 192.0.2.254:53"

step "node b: real nginx on its host address (the seed's pod, hostPort 80)"
nginx_on $B 192.0.2.2 edge-node-b
sleep 0.3
x $A curl -s --max-time 3 http://192.0.2.2/ | grep -q 'served by edge-node-b' && ok "nginx answers on 192.0.2.2:80" || fail "nginx on node b"

declare -A EC
step "edgecore on node a (docker0) and node b (edgemesh0), iptables mode"
edgecore_yaml edge-node-a docker0 192.0.2.254
edgecore_yaml edge-node-b edgemesh0 192.0.2.254 'hijackInterfaces: [cni0]'
start_edgecore $A edge-node-a
start_edgecore $B edge-node-b
ok "both ready"

step "cloud: edgectl apply the seed's nginx deployment and headless nginx-svc (http-0 12345 → 80)"
# edgectl is the endpoint-slice controller: it publishes nginx-svc's EndpointSlice (192.0.2.2:80)
# to every node, and the pod to its node (b) only
x $CLOUD node "$EDGECTL" --server tcp://192.0.2.254:1883 apply -f examples/seed-walkthrough/nginx.yaml --node-ip edge-node-b=192.0.2.2 | sed 's/^/    /'
slices=/apis/discovery.k8s.io/v1/namespaces/default/endpointslices
for _ in $(seq 1 50); do x $A curl -s http://127.0.0.1:10550$slices | grep -q 192.0.2.2 && break; sleep 0.1; done
x $A node "$EDGECTL" get svc | sed 's/^/    /'
x $A node "$EDGECTL" get endpointslices | sed 's/^/    /'
x $A node "$EDGECTL" get endpointslices | grep -q 'nginx-svc-.*192.0.2.2' && ok "node a has nginx-svc's slice" || fail "no slice on node a"
x $A node "$EDGECTL" get pods | grep -q 'No resources' && ok "node a has no pod of node b" || fail "node a got node b's pod"
for _ in $(seq 1 50); do x $B curl -s http://127.0.0.1:10550/api/v1/namespaces/default/pods | grep -q nginx-deployment-0 && break; sleep 0.1; done
x $B node "$EDGECTL" get pods | sed 's/^/    /'

check_from() { # ns label
  local vip page
  vip=$(x $1 getent hosts nginx-svc.default.svc.cluster.local | awk '{print $1}')
  [[ $vip == 198.18.* ]] || fail "$2: getent gave '$vip'"
  ok "$2: getent hosts nginx-svc.default.svc.cluster.local → $vip"
  [ "$(x $1 dig +short +tries=1 +time=3 nginx-svc.default.svc.cluster.local)" = "$vip" ] || fail "$2: dig"
  ok "$2: dig → $vip"
  page=$(x $1 curl -s --max-time 5 http://nginx-svc.default.svc.cluster.local:12345) || true
  echo "$page" | grep -q '<title>Welcome to nginx!</title>' || fail "$2: curl by name: '$page'"
  ok "$2: curl http://nginx-svc.default.svc.cluster.local:12345 → $(echo "$page" | grep -o 'served by [a-z0-9-]*')"
  LAST_VIP=$vip
}
step "from node a's host namespace and from its container"
check_from $A "node a"
VIP=$LAST_VIP
check_from $CTR "container"
ext_from() { # ns label: a name outside the cluster, through EdgeMesh to the cloud's resolver
  local ext
  ext=$(x $1 dig +short +tries=1 +time=3 www.example.test)
  [ "$ext" = "192.0.2.200" ] && ok "$2: external name www.example.test → $ext (through the upstream)" || fail "$2: external name: '$ext'"
}
ext_from $CTR "container"
ext_from $A "node a"
ext_from $B "node b (edgemesh0, 169.254.96.16)"

step "from the container on node b (cni0; EdgeMesh on edgemesh0, dns.hijackInterfaces: [cni0])"
check_from $CTRB "node b's container"
ext_from $CTRB "node b's container"

step "offline: stop mosquitto, restart edgecore on node a — same VIP, same page"
kill $MQ_PID; wait $MQ_PID 2>/dev/null || true
kill -TERM "${EC[edge-node-a]}"; wait "${EC[edge-node-a]}" 2>/dev/null || true
x $A iptables-save -t nat | grep -q EDGEMESH && fail "rules left after SIGTERM" || ok "SIGTERM removed every rule of node a"
start_edgecore $A edge-node-a
grep -q '"cloud link down' "$W/edge-node-a.log" || true
check_from $A "node a (offline)"
[ "$LAST_VIP" = "$VIP" ] && ok "same VIP $VIP after an offline restart" || fail "VIP changed: $VIP → $LAST_VIP"
check_from $CTR "container (offline)"

step "cloud back; a second nginx on node c: requests spread across both"
start_mosquitto
nginx_on $C 192.0.2.3 edge-node-c
sed -e 's/name: nginx-deployment$/name: nginx-deployment-c/' -e 's/nodeName: edge-node-b/nodeName: edge-node-c/' examples/seed-walkthrough/nginx.yaml | awk '/^---/ {exit} {print}' > "$W/nginx-c.yaml"
x $CLOUD node "$EDGECTL" --server tcp://192.0.2.254:1883 apply -f "$W/nginx-c.yaml" --node-ip edge-node-c=192.0.2.3 | sed 's/^/    /'
seen=""
for _ in $(seq 1 100); do
  seen=$(for _ in 1 2 3 4 5 6; do x $CTR curl -s --max-time 5 http://nginx-svc.default.svc.cluster.local:12345; done | grep -o 'served by [a-z0-9-]*' | sort -u | tr '\n' ' ')
  [[ $seen == *edge-node-b* && $seen == *edge-node-c* ]] && break
  sleep 0.2
done
[[ $seen == *edge-node-b* && $seen == *edge-node-c* ]] && ok "from the container: $seen" || fail "not spread: $seen"

step "delete the service: NXDOMAIN, and no rule of it remains"
awk 'f {print} /^---/ {f=1}' examples/seed-walkthrough/nginx.yaml > "$W/svc.yaml"
x $CLOUD node "$EDGECTL" --server tcp://192.0.2.254:1883 delete -f "$W/svc.yaml" | sed 's/^/    /'
for _ in $(seq 1 100); do x $A dig +tries=1 +time=2 nginx-svc.default.svc.cluster.local | grep -q 'status: NXDOMAIN' && break; sleep 0.1; done
x $A dig +tries=1 +time=2 nginx-svc.default.svc.cluster.local | grep -q 'status: NXDOMAIN' && ok "nginx-svc.default.svc.cluster.local → NXDOMAIN" || fail "still resolves"
for ns in $A $B; do
  x $ns iptables-save -t nat | grep -q 'nginx-svc' && fail "a rule of nginx-svc remains" || true
done
ok "no rule of nginx-svc on node a or node b"

step "stop edgecore on both nodes"
for n in edge-node-a edge-node-b; do kill -TERM "${EC[$n]}"; wait "${EC[$n]}" 2>/dev/null || true; done
for ns in $A $B; do x $ns iptables-save -t nat | grep -q EDGEMESH && fail "rules left on $ns" || true; done
ok "no EdgeMesh rule left"
printf '\nALL STEPS PASSED\n'
