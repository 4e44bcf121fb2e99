#!/usr/bin/env bash
# Checks that scripts/install-deps.sh installs everything Falk runs, on a machine that has nothing else:
# builds a throwaway minimal Debian root filesystem (mmdebstrap, variant minbase), runs install-deps.sh
# inside it, then
#   1. checks that every program a backend, a test, the demo or an image build runs resolves there
#      (the list below, per backend: what Falk starts and what the services it talks to start);
#   2. publishes a port from a podman container inside it (netavark must set up the forwarding, which
#      needs iptables: the gap that once failed 12 tests on a fresh machine);
#   3. starts QEMU with the devices the test guest uses (virtio-net needs its option ROM) and quits it
#      over QMP.
# Run as root on the development machine: scripts/check-fresh-machine.sh [--keep]. Takes a few minutes;
# needs mmdebstrap on the host (installed if missing) and a reachable Debian mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[ "${1:-}" = --keep ] && keep=true
[ "$(id -u)" -eq 0 ] || { echo "check-fresh-machine: run as root" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends mmdebstrap; }

root=$(mktemp -d /var/tmp/falk-fresh.XXXXXX)
cleanup() {
    # Every mount below the root, ours and podman's (its storage), deepest first.
    local m
    for m in $(findmnt -rn -o TARGET | grep "^$root\(/\|$\)" | sort -r); do umount -l "$m" 2>/dev/null || true; done
    if findmnt -rn -o TARGET | grep -q "^$root"; then
        echo "check-fresh-machine: $root still has mounts; not removing it" >&2
    elif ! $keep; then
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT
mount_into() { mkdir -p "$root$2"; mount "${@:3}" "$1" "$root$2"; }

echo "check-fresh-machine: building a minimal Debian 12 in $root"
mmdebstrap --quiet --variant=minbase bookworm "$root"
# The root must be a mount point of its own: podman's storage remounts / when it unpacks layers.
mount --bind "$root" "$root"
cp -r scripts "$root/opt/falk-scripts"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

mount_into proc /proc -t proc
# rslave: unmounting them afterwards must never propagate back to the host's /sys and /dev.
mount_into /sys /sys --rbind --make-rslave
mount_into /dev /dev --rbind --make-rslave
mount_into tmpfs /run -t tmpfs
mount_into tmpfs /tmp -t tmpfs

echo "check-fresh-machine: running install-deps.sh inside it"
chroot "$root" /opt/falk-scripts/install-deps.sh

# What each backend runs, directly or through the service it talks to, and what tests, demo and image
# builds run. A name is looked up on PATH (sbin included); a path must exist and be executable.
programs=(
    # custom backend: launches in their own session; sshd in the tests' and demo's machines
    setsid /usr/sbin/sshd ssh ssh-keygen
    # podman backend: the API service and what it starts per container
    podman conmon runc /usr/lib/podman/netavark /usr/lib/podman/aardvark-dns catatonit iptables
    slirp4netns fuse-overlayfs newuidmap newgidmap
    # qemu backend (qemu-io: the tests write data into a base image)
    qemu-system-x86_64 qemu-img qemu-io
    # lxd backend: the daemon the fixtures start, and lxc for the one-time host set-up and the test image
    lxd lxc
    # test image builds: podman image (mmdebstrap) and QEMU guest (kernel package, busybox, ext4 image)
    mmdebstrap mkfs.ext4 debugfs cpio zstd xz dpkg-deb flock /bin/busybox /usr/lib/openssh/sftp-server
    # tests and demo: process table, privilege drop for access tests, README's curl session
    ps setpriv curl
)
missing=()
for p in "${programs[@]}"; do
    if [[ $p == /* ]]; then
        chroot "$root" test -x "$p" || missing+=("$p")
    else
        chroot "$root" env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            sh -c 'command -v "$1" >/dev/null' sh "$p" || missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "check-fresh-machine: FAILED: not installed by install-deps.sh: ${missing[*]}" >&2
    exit 1
fi
echo "check-fresh-machine: all ${#programs[@]} programs resolve"
# QEMU runs as this system user (qemu_user's default), never as root.
chroot "$root" getent passwd falk-qemu >/dev/null \
    || { echo "check-fresh-machine: FAILED: install-deps.sh did not create the user falk-qemu" >&2; exit 1; }
echo "check-fresh-machine: user falk-qemu exists"
# The Python client's tests and type check run on Debian's Python and its packages.
chroot "$root" /usr/bin/python3 -c 'import aiohttp, pytest, pytest_asyncio, mypy' \
    || { echo "check-fresh-machine: FAILED: the Python client's modules are not installed" >&2; exit 1; }

echo "check-fresh-machine: podman: a container with a published port"
# A one-binary image: the static busybox serving a TCP port.
chroot "$root" sh -euc '
    mkdir -p /tmp/img/bin && cp /bin/busybox /tmp/img/bin/busybox
    tar -C /tmp/img -cf /tmp/img.tar .
'
cp images/podman/containers.conf "$root/opt/containers.conf"
chroot "$root" env CONTAINERS_CONF=/opt/containers.conf sh -euc '
    podman import -q /tmp/img.tar localhost/falk-fresh-check >/dev/null
    podman run -d --rm --name falk-fresh-check -p 127.0.0.1:18222:8080 localhost/falk-fresh-check \
        /bin/busybox nc -ll -p 8080 -e /bin/busybox echo falk-fresh-ok >/dev/null
    ok=
    for _ in $(seq 50); do
        if answer=$(/bin/busybox nc 127.0.0.1 18222 </dev/null 2>/dev/null) && [ "$answer" = falk-fresh-ok ]; then ok=1; break; fi
        sleep 0.1
    done
    podman rm -f -t 0 falk-fresh-check >/dev/null
    podman rmi -f localhost/falk-fresh-check >/dev/null
    [ -n "$ok" ] || { echo "check-fresh-machine: FAILED: the published port did not answer" >&2; exit 1; }
'
echo "check-fresh-machine: podman published a port"

echo "check-fresh-machine: qemu: the test guest's devices, quit over QMP, as falk-qemu"
chroot "$root" sh -euc '
    qemu-img create -q -f qcow2 /tmp/disk.qcow2 16M
    chown falk-qemu: /tmp/disk.qcow2
    printf "%s\n" "{\"execute\":\"qmp_capabilities\"}" "{\"execute\":\"quit\"}" |
        timeout 30 setpriv --reuid=falk-qemu --regid=falk-qemu --init-groups -- qemu-system-x86_64 -machine q35 -accel tcg -cpu qemu64 -m 64 -nodefaults -display none -S \
            -drive file=/tmp/disk.qcow2,if=virtio,format=qcow2 -netdev user,id=n0,hostfwd=tcp:127.0.0.1:18223-:22 \
            -device virtio-net-pci,netdev=n0 -device virtio-rng-pci -qmp stdio >/tmp/qmp.out
    grep -q "\"return\"" /tmp/qmp.out
'
echo "check-fresh-machine: qemu started and quit"
echo "check-fresh-machine: OK"
