#!/usr/bin/env bash
# Runs Falk's whole test suite on a machine that has only the .NET SDK: installs the Debian packages the
# tests drive (sshd, podman, QEMU), then runs every test. The test fixtures build their own images and
# start their own services (falkd, podman's API service, QEMU guests) and remove them afterwards.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
dotnet test Falk.slnx -c Release "$@"
