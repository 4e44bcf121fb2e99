#!/usr/bin/env bash
# Installs the Debian packages Falk's tests, demo and backends use, including what podman, netavark, QEMU
# and sshd need only at run time, and creates the system user QEMU runs as (falk-qemu). Idempotent: installs
# and creates only what is missing. scripts/check-fresh-machine.sh checks the list in a throwaway minimal
# Debian: every program Falk and its services run must resolve, and the user must exist.
set -euo pipefail

packages=(
  openssh-server openssh-client openssh-sftp-server  # sshd in custom machines, test guests and images; ssh, ssh-keygen
  util-linux procps curl ca-certificates  # setsid (own process group per launch), ps, the README's curl session
  podman runc uidmap slirp4netns fuse-overlayfs netavark aardvark-dns catatonit  # podman backend and its API service
  iptables                                # netavark sets up published ports with it (podman only suggests it)
  mmdebstrap                              # the podman test image's root filesystem
  qemu-system-x86 qemu-utils              # qemu backend
  busybox-static e2fsprogs cpio zstd xz-utils  # the qemu test guest
  python3 python3-aiohttp python3-pytest python3-pytest-asyncio mypy  # clients/python: falk_client, its tests and type check
  lxd lxd-client                          # lxd backend (the daemon, and lxc to set the host up and import the test image)
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi

  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The user QEMU runs as (falk.conf's qemu_user): a system account with a group of its own, no home and no
# login, in the kvm group for /dev/kvm. A guest that escapes into QEMU is this user, not root.
qemu_user=falk-qemu
if ! getent passwd "$qemu_user" >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing user $qemu_user (run as root, or create it)" >&2
    exit 1
  fi

  echo "install-deps: creating system user $qemu_user"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --comment "Falk QEMU guests" "$qemu_user"
fi

if getent group kvm >/dev/null && ! id -nG "$qemu_user" | tr ' ' '\n' | grep -qx kvm; then
  if [ "$(id -u)" -eq 0 ]; then
    usermod --append --groups kvm "$qemu_user"
  else
    echo "install-deps: $qemu_user is not in group kvm (run as root to add it)" >&2
  fi
fi
