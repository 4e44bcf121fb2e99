#!/usr/bin/env bash
# Runs Falk's whole test suite on a machine that has only the .NET SDK: installs the Debian packages the
# tests drive (sshd, podman, QEMU), then runs every test. The test fixtures build their own images and
# start their own services (falkd, podman's API service, QEMU guests) and remove them afterwards.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
dotnet test Falk.slnx -c Release "$@" 2>&1 | tee "$log" || status=$?
# One plain closing line for readers that do not know Microsoft.Testing.Platform's summary.
passed=$(sed -n 's/^ *succeeded: *\([0-9]*\).*/\1/p' "$log" | tail -1)
failed=$(sed -n 's/^ *failed: *\([0-9]*\).*/\1/p' "$log" | tail -1)
skipped=$(sed -n 's/^ *skipped: *\([0-9]*\).*/\1/p' "$log" | tail -1)
echo "Tests: ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
exit "$status"
