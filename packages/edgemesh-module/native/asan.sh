#!/usr/bin/env bash
# Runs test suites against an AddressSanitizer build of the native addon (native/*.c): builds it in
# a temporary directory, puts it in place of build/Release/edgemesh_native.node for the run, and
# puts the regular build back on exit (also on failure or Ctrl-C).
# Not part of `npm test` (CI): the sanitized engines are several times slower.
#
# Usage (from anywhere): packages/edgemesh-module/native/asan.sh [jest arguments]
#   no test file among them: the suites that drive the native engines (L7, L4 splice, UDP batch, TLS pump,
#   nginx, proxy), e.g. `EDGEMESH_FUZZ_SCALE=10 native/asan.sh -t fuzz` for a long fuzz session
#
# - libasan is preloaded into the Node process only; the tools the tests spawn (nginx, wrk, curl,
#   dig, ...) run through wrappers that drop LD_PRELOAD (nginx with libasan preloaded hangs at start).
# - A small quarantine (8 MiB): the tests that bound the proxy's memory while streaming 1 GiB
#   measure RSS, and the default 256 MiB quarantine of freed blocks would count against them.
# - detect_leaks=0: Node itself keeps allocations to exit; leaks are not what this run looks for.
# - Out of its reach: suites that start a non-Node program by absolute path (dnsmasq in dns.test
#   hangs with libasan preloaded) or Node through `ip netns exec` (the wrapper drops the runtime,
#   and the sanitized addon then fails to load): dns, interception, seed-walkthrough.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PKG="$ROOT/packages/edgemesh-module"
ADDON="$PKG/build/Release/edgemesh_native.node"
[ -f "$ADDON" ] || { echo "asan.sh: build the addon first (npm install)" >&2; exit 1; }
# never keep a sanitized build as "the regular one" (after a run that was killed hard, say)
if grep -q __asan_init "$ADDON"; then
  echo "asan.sh: the addon in place is a sanitized build; rebuild it: npx node-gyp rebuild -C packages/edgemesh-module" >&2
  exit 1
fi
LIBASAN=$(gcc -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "asan.sh: libasan.so not found (gcc's)" >&2; exit 1; }
W=$(mktemp -d)
cp "$ADDON" "$W/regular.node"
trap 'cp "$W/regular.node" "$ADDON"; rm -rf "$W"' EXIT
cp -r "$PKG/native" "$W/native"
# binding.gyp's own target (its sources), with sanitizer flags
node -e '
  const g = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const t = g.targets[0];
  const linux = t.conditions.find((c) => c[0] === "OS==\x27linux\x27")[1];
  const out = { targets: [{ target_name: t.target_name, sources: linux.sources,
    cflags: ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    ldflags: ["-fsanitize=address"] }] };
  require("fs").writeFileSync(process.argv[2], JSON.stringify(out, null, 1));
' "$PKG/binding.gyp" "$W/binding.gyp"
echo '{"name":"edgemesh-native-asan","version":"0.0.0","private":true}' > "$W/package.json"
# through npx, which passes npm's config (nodedir: Node's own headers, no download)
(cd "$W" && npx --prefix "$ROOT" node-gyp rebuild > build.log 2>&1) || { cat "$W/build.log"; exit 1; }
mkdir "$W/bin"
for t in nginx wrk curl dig iperf3 mosquitto haproxy ip python3; do
  p=$(command -v "$t") || continue
  printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$p" > "$W/bin/$t"
  chmod +x "$W/bin/$t"
done
cp "$W/build/Release/edgemesh_native.node" "$ADDON"
# no test file named (only options such as -t fuzz): the engine suites
named=0
for a in "$@"; do case "$a" in *.ts | */*) named=1 ;; esac; done
if [ $named -eq 0 ]; then
  set -- packages/edgemesh-module/test/http-native.test.ts packages/edgemesh-module/test/splice.test.ts \
    packages/edgemesh-module/test/udp-batch.test.ts packages/edgemesh-module/test/nginx.test.ts \
    packages/edgemesh-module/test/proxy.test.ts packages/edgetunnel/test/tls-engine.test.ts \
    packages/edgemesh-module/test/h2.test.ts "$@"
fi
cd "$ROOT"
PATH="$W/bin:$PATH" LD_PRELOAD="$LIBASAN" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:quarantine_size_mb=8 \
  "$ROOT/node_modules/.bin/jest" "$@"
