#!/usr/bin/env bash
# Build Falk's podman test image: a minimal Debian 12 root filesystem running
# sshd, with user `chantal` who can log in with a key generated at build time.
#
#   images/podman/build-image.sh
#
# Environment:
#   FALK_TEST_IMAGE    image tag        (default localhost/falk-test-sshd:latest)
#   FALK_IMAGE_DIR     cache root       (default /var/cache/falk-test-images)
#   FALK_DEBIAN_SUITE  Debian suite     (default bookworm)
#   FALK_DEBIAN_MIRROR mmdebstrap mirror (default: mmdebstrap's deb.debian.org
#                      plus updates/security)
#   FALK_REBUILD=1     rebuild even if the cache is valid
#
# podman is always called with CONTAINERS_CONF=<this dir>/containers.conf;
# start the API the same way:
#   CONTAINERS_CONF=images/podman/containers.conf \
#     podman system service --time=0 unix:///run/falk/podman.sock
#
# Outputs in $FALK_IMAGE_DIR/podman/:
#   id_ed25519, id_ed25519.pub   chantal's client key pair (mode 600)
#   ssh_host_ed25519_key.pub     the image's sshd host key ("ssh-ed25519 AAAA...
#                                root@falk-test-sshd"); for known_hosts write
#                                "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
#   image.stamp                  line 1: sha256 of this script; 2: tag; 3: image id
#
# The image is rebuilt only if this script changed, the image is missing from
# podman's storage, the image's labels don't match the cached keys, or an
# output file is missing. A cached run takes ~0.2 s; a build ~40-60 s.
# Run it as root (tested that way): apt-get, mmdebstrap in root mode, and the
# rootful podman storage that the Falk daemon's API socket serves.
#
# Equivalent Dockerfile (for reading, not used):
#   FROM debian:bookworm (minbase) + openssh-server git ca-certificates
#   RUN useradd -m -s /bin/bash chantal && usermod -p '*' chantal
#   COPY id_ed25519.pub /home/chantal/.ssh/authorized_keys
#   COPY ssh_host_ed25519_key* /etc/ssh/
#   COPY falk-sshd.conf /etc/ssh/sshd_config.d/00-falk.conf
#   RUN mkdir -p /run/sshd
#   EXPOSE 22
#   LABEL org.falk.test-image=1
#   CMD ["/usr/sbin/sshd","-D","-e"]
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
script_dir="$(dirname "$script_path")"

IMAGE="${FALK_TEST_IMAGE:-localhost/falk-test-sshd:latest}"
OUT="${FALK_IMAGE_DIR:-/var/cache/falk-test-images}/podman"
SUITE="${FALK_DEBIAN_SUITE:-bookworm}"
MIRROR="${FALK_DEBIAN_MIRROR:-}"

# podman 4.3 on our hosts needs runc, low ulimits, cgroupfs, file events.
export CONTAINERS_CONF="$script_dir/containers.conf"

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- host dependencies -------------------------------------------------------
missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v podman >/dev/null 2>&1 || missing+=(podman)
# containers.conf pins runtime=runc and network_backend=netavark; podman
# itself is happy with crun or CNI, so these must be asked for explicitly.
[ -x /usr/sbin/runc ] || command -v runc >/dev/null 2>&1 || missing+=(runc)
[ -x /usr/lib/podman/netavark ] || missing+=(netavark aardvark-dns)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); run as root or install them"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${missing[@]}" >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >&2
        apt-get install -y "${missing[@]}" >&2
    fi
fi

# --- cache check -------------------------------------------------------------
mkdir -p "$OUT"
chmod 700 "$OUT"
exec 9>"$OUT/.lock"
flock 9   # serialize concurrent builds (parallel test runs)

recipe_hash="$(sha256sum "$script_path" | cut -d' ' -f1)"
stamp="$OUT/image.stamp"

# sha256 of the base64 key blob of an OpenSSH public key file
key_hash() { awk '{print $2}' "$1" | sha256sum | cut -d' ' -f1; }

image_label() {
    podman image inspect --format "{{index .Labels \"$1\"}}" "$IMAGE" 2>/dev/null
}

cache_valid() {
    [ "${FALK_REBUILD:-0}" != 1 ] || return 1
    local f
    for f in id_ed25519 id_ed25519.pub ssh_host_ed25519_key.pub image.stamp; do
        [ -s "$OUT/$f" ] || return 1
    done
    [ "$(sed -n 1p "$stamp")" = "$recipe_hash" ] || return 1
    podman image exists "$IMAGE" || return 1
    # The image must be the one these keys were made for (someone may have
    # rebuilt the tag from another cache dir).
    [ "$(image_label org.falk.recipe-sha256)" = "$recipe_hash" ] || return 1
    [ "$(image_label org.falk.host-key-sha256)" = "$(key_hash "$OUT/ssh_host_ed25519_key.pub")" ] || return 1
    [ "$(image_label org.falk.client-key-sha256)" = "$(key_hash "$OUT/id_ed25519.pub")" ] || return 1
}

report() {
    echo "falk-test-image: $IMAGE ($1) client_key=$OUT/id_ed25519 client_pub=$OUT/id_ed25519.pub host_key_pub=$OUT/ssh_host_ed25519_key.pub"
}

if cache_valid; then
    report cached
    exit 0
fi

# --- build -------------------------------------------------------------------
start=$SECONDS
work="$(mktemp -d "${TMPDIR:-/var/tmp}/falk-test-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"   # unshare-mode mmdebstrap hooks must be able to read it

log "generating keys"
ssh-keygen -q -t ed25519 -N '' -C chantal@falk-test -f "$work/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -C root@falk-test-sshd -f "$work/ssh_host_ed25519_key"

cat >"$work/falk-sshd.conf" <<'EOF'
# Falk test image: key-only logins, no PAM, no systemd.
# Included at the top of /etc/ssh/sshd_config; first value wins.
HostKey /etc/ssh/ssh_host_ed25519_key
# No PAM: there is no login session machinery in the container
# (pam_loginuid fails without CAP_AUDIT_CONTROL). Without PAM, sshd refuses
# accounts whose shadow password starts with '!', so chantal's is '*'.
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

cat >"$work/customize.sh" <<'EOF'
#!/bin/sh
# mmdebstrap --customize-hook: $1 is the root filesystem, runs as (namespace) root.
set -eu
root="$1"
w="$FALK_BUILD_WORK"

chroot "$root" useradd -m -s /bin/bash -c 'Falk test user' chantal
# '!' (locked) makes sshd without PAM reject even public key logins.
chroot "$root" usermod -p '*' chantal
chroot "$root" install -d -m 700 -o chantal -g chantal /home/chantal/.ssh
cat "$w/id_ed25519.pub" >"$root/home/chantal/.ssh/authorized_keys"
chroot "$root" chown chantal:chantal /home/chantal/.ssh/authorized_keys
chmod 600 "$root/home/chantal/.ssh/authorized_keys"

# One known host key (ours); drop the ones openssh-server's postinst made.
rm -f "$root"/etc/ssh/ssh_host_*
install -m 600 "$w/ssh_host_ed25519_key" "$root/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$w/ssh_host_ed25519_key.pub" "$root/etc/ssh/ssh_host_ed25519_key.pub"
install -m 644 "$w/falk-sshd.conf" "$root/etc/ssh/sshd_config.d/00-falk.conf"

# mmdebstrap empties /run at the end (skipped via --skip=cleanup/run, so do
# it here), but sshd needs its privilege separation dir /run/sshd.
find "$root/run" -mindepth 1 -delete
install -d -m 755 "$root/run/sshd"

# Podman bind-mounts its own; don't ship the build host's.
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
    --include=openssh-server,git,ca-certificates \
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

log "importing into podman as $IMAGE"
old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
new_id="$(podman import -q \
    --change 'CMD ["/usr/sbin/sshd","-D","-e"]' \
    --change 'EXPOSE 22/tcp' \
    --change 'LABEL org.falk.test-image=1' \
    --change "LABEL org.falk.recipe-sha256=$recipe_hash" \
    --change "LABEL org.falk.host-key-sha256=$(key_hash "$work/ssh_host_ed25519_key.pub")" \
    --change "LABEL org.falk.client-key-sha256=$(key_hash "$work/id_ed25519.pub")" \
    --message "falk test image (sshd, user chantal)" \
    "$work/rootfs.tar" "$IMAGE")"
new_id="${new_id#sha256:}"
# The previous build is now untagged; drop it unless something still uses it.
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi

# Publish outputs; the stamp goes last so an interrupted build is redone.
rm -f "$stamp"
install -m 600 "$work/id_ed25519" "$OUT/id_ed25519"
install -m 600 "$work/id_ed25519.pub" "$OUT/id_ed25519.pub"
install -m 644 "$work/ssh_host_ed25519_key.pub" "$OUT/ssh_host_ed25519_key.pub"
printf '%s\n%s\n%s\n' "$recipe_hash" "$IMAGE" "$new_id" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"

log "built in $((SECONDS - start))s"
report built
