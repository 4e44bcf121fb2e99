#!/usr/bin/env bash
# Runs Falk's whole test suite on a machine that has only the .NET SDK: installs the Debian packages the
# tests drive (sshd, podman, QEMU), then runs every test. The test fixtures build their own images and
# start their own services (falkd, podman's API service, QEMU guests) and remove them afterwards.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
log=$(mktemp)
pylog=$(mktemp)
trap 'rm -f "$log" "$pylog"' EXIT
status=0
dotnet test Falk.slnx -c Release "$@" 2>&1 | tee "$log" || status=$?
# The Python client (clients/python), with Debian's Python: mypy --strict, then its tests against the falkd just built.
# A type error counts as one failed check in the closing line.
mypy_failed=0
(cd clients/python && /usr/bin/python3 -m mypy --strict falk_client tests) || { status=1; mypy_failed=1; }
(cd clients/python && FALK_PY_NO_BUILD=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider) 2>&1 | tee "$pylog" || status=$?
# One plain closing line for readers that do not know Microsoft.Testing.Platform's summary.
passed=$(sed -n 's/^ *succeeded: *\([0-9]*\).*/\1/p' "$log" | tail -1)
failed=$(sed -n 's/^ *failed: *\([0-9]*\).*/\1/p' "$log" | tail -1)
skipped=$(sed -n 's/^ *skipped: *\([0-9]*\).*/\1/p' "$log" | tail -1)
py_summary=$(grep -E '^=* *[0-9]+ (passed|failed|skipped|error)' "$pylog" | tail -1)
py_passed=$(grep -oE '[0-9]+ passed' <<<"$py_summary" | cut -d' ' -f1)
py_failed=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$py_summary" | awk '{ n += $1 } END { print n + 0 }')
py_skipped=$(grep -oE '[0-9]+ skipped' <<<"$py_summary" | cut -d' ' -f1)
passed=$(( ${passed:-0} + ${py_passed:-0} ))
failed=$(( ${failed:-0} + ${py_failed:-0} + mypy_failed ))
skipped=$(( ${skipped:-0} + ${py_skipped:-0} ))
echo "Tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
