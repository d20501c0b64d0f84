#!/usr/bin/env bash
# The whole test suite: lint (Biome: formatting and lint rules; knip: unused exports), unit tests
# (vitest, pure logic) and the conformance suite (compiled binaries against the real kernel).
# Ends with one line "N passed, N failed" over every suite; a failed lint counts as one failure.
#
#   npm test                      # everything
#   npm test -- conformance/macvlan.test.ts   # only the files named (unit or conformance)
set -uo pipefail
cd "$(dirname "$0")/.."

# What the suites need, each step quick when already done: Debian packages (iproute2, ping, qemu
# and a kernel for the ipvlan guest; runc for the node tests, Debian's containerd for the deploy
# test), the plugins, upstream's binaries to compare against, the real API server and kubelet, and
# the test nodes' containerd (progress while a cold build runs).
bash scripts/install-guest-deps.sh
bash scripts/install-node-deps.sh
npm run build
bash scripts/build-upstream.sh
bash scripts/build-kube.sh
bash scripts/build-containerd.sh

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
status=0

unit=() conformance=()
for arg in "$@"; do
  case "$arg" in conformance/*) conformance+=("$arg") ;; *) unit+=("$arg") ;; esac
done
run_unit=1 run_conformance=1
if [ $# -gt 0 ]; then
  [ ${#unit[@]} -gt 0 ] || run_unit=0
  [ ${#conformance[@]} -gt 0 ] || run_conformance=0
fi

# Lint with the whole suite only: a run of named files is about those files.
lint_failed=0
if [ $# -eq 0 ]; then
  echo "== lint (npm run lint)"
  npm run lint || { lint_failed=1; status=1; }
fi
if [ $run_unit = 1 ]; then
  echo "== unit tests"
  npx vitest run --reporter=default --reporter=json --outputFile.json="$reports/unit.json" "${unit[@]}" || status=1
fi
if [ $run_conformance = 1 ]; then
  echo "== conformance tests (compiled binaries, real kernel)"
  npx vitest run --config conformance/vitest.config.ts --reporter=default --reporter=json \
    --outputFile.json="$reports/conformance.json" "${conformance[@]}" || status=1
fi

node -e '
  const fs = require("fs");
  let passed = 0, failed = Number(process.argv[2]);
  for (const file of fs.readdirSync(process.argv[1])) {
    const report = JSON.parse(fs.readFileSync(process.argv[1] + "/" + file, "utf8"));
    passed += report.numPassedTests;
    failed += report.numFailedTests;
    // A file that failed to load has no failed test but is a failure all the same.
    if (!report.success && report.numFailedTests === 0) failed += Math.max(1, report.numFailedTestSuites);
  }
  console.log(`${passed} passed, ${failed} failed`);
' "$reports" "$lint_failed"
exit $status
