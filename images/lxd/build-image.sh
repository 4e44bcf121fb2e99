#!/usr/bin/env bash
# Build Falk's LXD test image: a minimal Debian 12 root filesystem whose init
# brings `lo` up and runs sshd, with user `chantal` who logs in with a key
# generated at build time. Same recipe as images/podman/build-image.sh, packed
# as an LXD "split" image (metadata tarball + rootfs tarball) and imported into
# the LXD daemon under an alias.
#
#   images/lxd/build-image.sh
#
# Environment:
#   FALK_LXD_IMAGE     image alias      (default falk-test-sshd)
#   FALK_IMAGE_DIR     cache root       (default /var/cache/falk-test-images)
#   FALK_DEBIAN_SUITE  Debian suite     (default bookworm)
#   FALK_DEBIAN_MIRROR mmdebstrap mirror (default: mmdebstrap's own)
#   FALK_REBUILD=1     rebuild even if the cache is valid
#   LXD_DIR            LXD's folder, as for `lxc` (default /var/lib/lxd)
#
# LXD must be running (`lxd --group root`, `lxd waitready`); the script uses
# the `lxc` CLI only to import the image (Falk itself never runs it).
#
# Outputs in $FALK_IMAGE_DIR/lxd/:
#   id_ed25519, id_ed25519.pub   chantal's client key pair (mode 600)
#   ssh_host_ed25519_key.pub     the image's sshd host key
#   rootfs.tar.xz, meta.tar.xz   the image, as imported
#   image.stamp                  line 1: sha256 of this script; 2: alias; 3: fingerprint
#
# The root filesystem is rebuilt only when this script changed or an output is
# missing; the image is re-imported when LXD does not have it under the alias
# with the recorded fingerprint. A cached run takes well under a second.
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"

ALIAS="${FALK_LXD_IMAGE:-falk-test-sshd}"
OUT="${FALK_IMAGE_DIR:-/var/cache/falk-test-images}/lxd"
SUITE="${FALK_DEBIAN_SUITE:-bookworm}"
MIRROR="${FALK_DEBIAN_MIRROR:-}"

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in mmdebstrap lxc ssh-keygen flock xz; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/install-deps.sh installs it)"
done

mkdir -p "$OUT"
chmod 700 "$OUT"
exec 9>"$OUT/.lock"
flock 9   # serialize concurrent builds (parallel test runs)

recipe_hash="$(sha256sum "$script_path" | cut -d' ' -f1)"
stamp="$OUT/image.stamp"

files_valid() {
    [ "${FALK_REBUILD:-0}" != 1 ] || return 1
    local f
    for f in id_ed25519 id_ed25519.pub ssh_host_ed25519_key.pub rootfs.tar.xz meta.tar.xz image.stamp; do
        [ -s "$OUT/$f" ] || return 1
    done
    [ "$(sed -n 1p "$stamp")" = "$recipe_hash" ]
}

report() {
    echo "falk-test-image: $ALIAS ($1) client_key=$OUT/id_ed25519 host_key_pub=$OUT/ssh_host_ed25519_key.pub"
}

imported_fingerprint() {
    lxc image list "$ALIAS" --format csv -c lf 2>/dev/null | awk -F, -v a="$ALIAS" '$1 == a { print $2 }'
}

if ! files_valid; then
    start=$SECONDS
    work="$(mktemp -d "${TMPDIR:-/var/tmp}/falk-lxd-image.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    chmod 755 "$work"

    log "generating keys"
    ssh-keygen -q -t ed25519 -N '' -C chantal@falk-test -f "$work/id_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C root@falk-test-lxd -f "$work/ssh_host_ed25519_key"

    cat >"$work/falk-sshd.conf" <<'EOF'
# Falk test image: key-only logins, no PAM.
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PrintMotd no
PrintLastLog no
UseDNS no
X11Forwarding no
EOF

    # PID 1 of the container. LXD stops a container gracefully by sending its
    # init SIGPWR; this init ends sshd and exits, which stops the container.
    cat >"$work/falk-init" <<'EOF'
#!/bin/bash
echo "falk-init: bringing lo up"
ip link set lo up
mkdir -p /run/sshd
/usr/sbin/sshd -D -e &
sshd=$!
echo "falk-init: sshd started ($sshd)"
trap 'echo "falk-init: shutting down"; kill -TERM "$sshd"; wait "$sshd"; exit 0' PWR TERM INT
wait "$sshd"
echo "falk-init: sshd ended"
EOF

    cat >"$work/customize.sh" <<'EOF'
#!/bin/sh
set -eu
root="$1"
w="$FALK_BUILD_WORK"
chroot "$root" useradd -m -s /bin/bash -c 'Falk test user' chantal
chroot "$root" usermod -p '*' chantal
chroot "$root" install -d -m 700 -o chantal -g chantal /home/chantal/.ssh
cat "$w/id_ed25519.pub" >"$root/home/chantal/.ssh/authorized_keys"
chroot "$root" chown chantal:chantal /home/chantal/.ssh/authorized_keys
chmod 600 "$root/home/chantal/.ssh/authorized_keys"
rm -f "$root"/etc/ssh/ssh_host_*
install -m 600 "$w/ssh_host_ed25519_key" "$root/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$w/ssh_host_ed25519_key.pub" "$root/etc/ssh/ssh_host_ed25519_key.pub"
install -m 644 "$w/falk-sshd.conf" "$root/etc/ssh/sshd_config.d/00-falk.conf"
install -m 755 "$w/falk-init" "$root/sbin/falk-init"
ln -sf /sbin/falk-init "$root/sbin/init"
find "$root/run" -mindepth 1 -delete
install -d -m 755 "$root/run/sshd"
: >"$root/etc/resolv.conf"
echo falk-test >"$root/etc/hostname"
rm -f "$root/etc/ssh/sshd_not_to_be_run"
chroot "$root" /usr/sbin/sshd -t
EOF
    chmod 755 "$work/customize.sh"

    log "building $SUITE root filesystem with mmdebstrap"
    mirror_args=()
    [ -z "$MIRROR" ] || mirror_args=("$MIRROR")
    FALK_BUILD_WORK="$work" mmdebstrap \
        --variant=minbase \
        --include=openssh-server,iproute2,git,ca-certificates \
        --aptopt='Apt::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --skip=cleanup/run \
        --customize-hook="$work/customize.sh" \
        "$SUITE" "$work/rootfs.tar" "${mirror_args[@]}" >&2
    xz -T0 -1 "$work/rootfs.tar"

    cat >"$work/metadata.yaml" <<EOF
architecture: x86_64
creation_date: $(date +%s)
properties:
  description: Falk test image (sshd, user chantal)
  os: debian
  release: $SUITE
  falk.recipe-sha256: $recipe_hash
EOF
    tar -C "$work" -cJf "$work/meta.tar.xz" metadata.yaml

    rm -f "$stamp"
    install -m 600 "$work/id_ed25519" "$OUT/id_ed25519"
    install -m 600 "$work/id_ed25519.pub" "$OUT/id_ed25519.pub"
    install -m 644 "$work/ssh_host_ed25519_key.pub" "$OUT/ssh_host_ed25519_key.pub"
    install -m 644 "$work/rootfs.tar.xz" "$OUT/rootfs.tar.xz"
    install -m 644 "$work/meta.tar.xz" "$OUT/meta.tar.xz"
    printf '%s\n%s\n%s\n' "$recipe_hash" "$ALIAS" "" >"$stamp.tmp"
    mv "$stamp.tmp" "$stamp"
    log "root filesystem built in $((SECONDS - start))s"
fi

# The fingerprint of a split image is the sha256 of its two tarballs together.
fingerprint="$(cat "$OUT/meta.tar.xz" "$OUT/rootfs.tar.xz" | sha256sum | cut -d' ' -f1)"
if [ "$(imported_fingerprint)" = "${fingerprint:0:12}" ]; then
    report cached
    exit 0
fi

log "importing into LXD as $ALIAS"
lxc image delete "$ALIAS" >/dev/null 2>&1 || true
lxc image delete "$fingerprint" >/dev/null 2>&1 || true
lxc image import "$OUT/meta.tar.xz" "$OUT/rootfs.tar.xz" --alias "$ALIAS" >&2
printf '%s\n%s\n%s\n' "$recipe_hash" "$ALIAS" "$fingerprint" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
report imported
