#!/usr/bin/env bash
# The whole suite N times (default 5) on a loaded machine: a CPU hog and an I/O hog (stress-ng,
# two workers) run for the whole session, as on a busy CI host. Prints each failed test by name
# and exits non-zero if any run failed. Not part of `npm test`. Usage: npm run test:stress [-- N]
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
command -v stress-ng >/dev/null || { echo "stress-ng not found (Debian: apt-get install -y stress-ng)"; exit 2; }
W=$(mktemp -d)
# the hogs stop by themselves after a bound, whatever happens to this script
stress-ng --cpu 1 --io 1 --timeout $((N * 900))s --quiet & hog=$!
trap 'kill $hog 2>/dev/null; wait $hog 2>/dev/null; rm -rf "$W"' EXIT
failed=0
for i in $(seq 1 "$N"); do
  start=$(date +%s)
  npx jest --json --outputFile="$W/run-$i.json" >"$W/run-$i.log" 2>&1
  rc=$?
  node -e '
    const r = require(process.argv[1]);
    const bad = r.testResults.flatMap((f) =>
      f.assertionResults.filter((a) => a.status === "failed").map((a) => `  FAIL ${f.name.replace(process.cwd() + "/", "")} › ${a.fullName}`));
    const broken = r.testResults.filter((f) => f.status === "failed" && !f.assertionResults.some((a) => a.status === "failed"))
      .map((f) => `  FAIL ${f.name.replace(process.cwd() + "/", "")} (suite: ${(f.message || "").split("\n").find((l) => l.trim()) || "failed to run"})`);
    console.log(`run ${process.argv[2]}: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (bad.length + broken.length ? "\n" + [...bad, ...broken].join("\n") : ""));
  ' "$W/run-$i.json" "$i" 2>/dev/null || echo "run $i: no results (jest exit $rc); see the log below" 
  echo "  ($(($(date +%s) - start)) s, jest exit $rc)"
  if [ $rc -ne 0 ]; then failed=$((failed + 1)); tail -n 30 "$W/run-$i.log"; fi
done
echo "$((N - failed)) of $N runs green under load"
[ $failed -eq 0 ]
