#!/usr/bin/env bash
# Runs bench/iptables.ts inside a network namespace made for it (never the host's iptables).
set -euo pipefail
cd "$(dirname "$0")/.."
NS="embench$$"
ip netns add "$NS"
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
npm run build >/dev/null # dist must match src
for backend in nft legacy; do
  IPT_BACKEND=$backend TS_NODE_PROJECT=bench/tsconfig.json ip netns exec "$NS" node -r ts-node/register/transpile-only bench/iptables.ts
done
