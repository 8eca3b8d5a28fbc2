#!/usr/bin/env bash
# L4 in iptables mode (issue #6, L4 goal): iperf3 through a plain TCP service port, as a node's
# own processes reach it, with `l4Mode: portal` (the VIP DNAT'd to EdgeMesh's L4 portal, the
# userspace splice hop) and with `l4Mode: dnat` (kube-proxy's iptables mode: the VIP DNAT'd by the
# kernel straight to the backend), each against direct iperf3 in the same namespace.
# Needs root: it creates two network namespaces (emlp<pid>, emld<pid>), each a node with an
# eth0 192.0.2.1 (the pod's hostIP), a docker0 bridge, an iperf3 server (the pod, hostPort 5201)
# and edgecore in iptables mode; every rule and route lives in those namespaces, which are deleted
# on exit. edgecore is pinned to core 1 and the iperf3 client to core 0, as in bench/proxy.sh.
# Prints PAIRS (default 6) rounds, order alternating, and the medians of the ratios to direct.
# Usage: [PAIRS=n] bench/l4-dnat.sh [seconds per iperf3 run, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-4}
PAIRS=${PAIRS:-6}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 1; }
for t in iperf3 taskset ip iptables python3; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done
W=$(mktemp -d)
chmod 755 "$W"
NS_P="emlp$$"; NS_D="emld$$"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for ns in $NS_P $NS_D; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
npm run build >/dev/null # dist must match src
EDGECORE="$PWD/packages/edgecore/bin/edgecore"
VIP=198.18.0.10

# the node's database: a service (plain TCP port 5201) and its pod on this node's address
node -e "
require('reflect-metadata');
const { MetaStore } = require('./packages/metamanager');
const s = new MetaStore(process.argv[1]);
const svc = { kind: 'Service', metadata: { name: 'iperf', namespace: 'default' },
  spec: { clusterIP: '$VIP', selector: { app: 'iperf' }, ports: [{ name: 'iperf', port: 5201, protocol: 'TCP', targetPort: 5201 }] } };
const pod = { kind: 'Pod', metadata: { name: 'iperf-0', namespace: 'default', labels: { app: 'iperf' } },
  spec: { nodeName: 'bench', containers: [{ name: 'c', ports: [{ containerPort: 5201, hostPort: 5201 }] }] },
  status: { phase: 'Running', hostIP: '192.0.2.1', podIP: '192.0.2.1', conditions: [{ type: 'Ready', status: 'True' }] } };
s.apply([
  { op: 'upsert', key: 'default/service/iperf', namespace: 'default', type: 'service', name: 'iperf', value: JSON.stringify(svc), resourceVersion: 1 },
  { op: 'upsert', key: 'default/pod/iperf-0', namespace: 'default', type: 'pod', name: 'iperf-0', value: JSON.stringify(pod), resourceVersion: 1 },
]);
s.close();" "$W/seed.db"

for ns in $NS_P $NS_D; do
  mode=portal; [ "$ns" = "$NS_D" ] && mode=dnat
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link add eth0 type veth peer name eth1 # (no dummy driver in every kernel)
  ip netns exec "$ns" ip link set eth1 up
  ip netns exec "$ns" ip addr add 192.0.2.1/24 dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link add docker0 type bridge
  ip netns exec "$ns" ip addr add 172.17.0.1/16 dev docker0
  ip netns exec "$ns" ip link set docker0 up
  cp "$W/seed.db" "$W/$mode.db"
  cat > "$W/$mode.yaml" <<CONF
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: $W/$mode.db }
observability: { listen: 127.0.0.1:10351 }
log: { format: json }
drainSeconds: 1
modules:
  edgeHub: { enable: false }
  metaManager: { metaServer: { enable: false } }
  edgeMesh:
    mode: iptables
    listenInterface: docker0
    l4Mode: $mode
    dns: { listenPort: 53, hijack: none, upstreams: [127.0.0.1:53] }
CONF
  ip netns exec "$ns" iperf3 -s -B 192.0.2.1 -p 5201 > /dev/null 2>&1 & PIDS+=($!)
  ip netns exec "$ns" taskset -c 1 node "$EDGECORE" --config "$W/$mode.yaml" > "$W/$mode.log" 2>&1 & PIDS+=($!)
done
for mode in portal dnat; do
  for _ in $(seq 100); do grep -q 'edgecore ready' "$W/$mode.log" && break; sleep 0.1; done
  grep -q 'edgecore ready' "$W/$mode.log" || { cat "$W/$mode.log"; exit 1; }
  grep -o '"l4Mode":"[a-z]*"' "$W/$mode.log" | grep -q "\"$mode\"" || { echo "edgecore did not start in l4Mode $mode"; cat "$W/$mode.log"; exit 1; }
done

# iperf3 Gbit/s in namespace NS to ADDR
gbit() {
  ip netns exec "$1" taskset -c 0 iperf3 -c "$2" -p 5201 -t "$SECS" -J |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
median() { tr ' ' '\n' <<< "$1" | grep . | sort -n | awk '{v[NR]=$1} END {print (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
ratio() { python3 -c "print('%.3f' % ($1 / $2))"; }
gbit $NS_P $VIP > /dev/null # warm-up (JIT of the portal path)
echo "L4 iptables mode — iperf3 -t$SECS, one stream, to the service VIP ($VIP:5201) and direct (192.0.2.1:5201); edgecore on core 1, client on core 0; node $(node -v)"
printf '%-6s| %-14s| %-14s| %-13s| %-14s| %-14s| %s\n' round 'direct Gbit/s' 'portal Gbit/s' 'portal/direct' 'direct Gbit/s' 'dnat Gbit/s' 'dnat/direct'
RP=""; RD=""
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then
    dp=$(gbit $NS_P 192.0.2.1); p=$(gbit $NS_P $VIP); dd=$(gbit $NS_D 192.0.2.1); d=$(gbit $NS_D $VIP)
  else
    d=$(gbit $NS_D $VIP); dd=$(gbit $NS_D 192.0.2.1); p=$(gbit $NS_P $VIP); dp=$(gbit $NS_P 192.0.2.1)
  fi
  rp=$(ratio "$p" "$dp"); rd=$(ratio "$d" "$dd")
  RP="$RP $rp"; RD="$RD $rd"
  printf '%-6s| %-14s| %-14s| %-13s| %-14s| %-14s| %s\n' "$i" "$dp" "$p" "$rp" "$dd" "$d" "$rd"
done
echo "medians: l4Mode portal / direct $(median "$RP"); l4Mode dnat / direct $(median "$RD")"
echo "goal: L4 iperf3 ≥ 0.7 × direct"
