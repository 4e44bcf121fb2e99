#!/usr/bin/env bash
# Runs Falk's whole test suite on a machine that has only the .NET SDK: installs the Debian packages the
# tests drive (sshd, podman, QEMU, LXD, Python 3 and its packages), then runs every .NET test and the Python
# client's type check and tests. The fixtures build their own images and start their own services (falkd,
# podman's API service, QEMU guests, the LXD daemon when it is not running) and remove what they make.
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
# One plain closing line for readers that do not know Microsoft.Testing.Platform's summary; it counts both suites.
# (A count that is absent is 0: `|| true`, since grep finding nothing must not end the script under pipefail.)
count() { local n; n=$(sed -n "s/^ *$1: *\([0-9]*\).*/\1/p" "$log" | tail -1 || true); echo "${n:-0}"; }
py_count() { grep -E '^=* *[0-9]+ (passed|failed|skipped|errors?)' "$pylog" | tail -1 | grep -oE "[0-9]+ ($1)" | awk '{ n += $1 } END { print n + 0 }' || true; }
passed=$(( $(count succeeded) + $(py_count passed) ))
failed=$(( $(count failed) + $(py_count 'failed|errors?') + mypy_failed ))
skipped=$(( $(count skipped) + $(py_count skipped) ))
echo "Tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
