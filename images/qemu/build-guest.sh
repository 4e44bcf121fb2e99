#!/usr/bin/env bash
# Builds Falk's small QEMU test guest from Debian packages.
#
# Output: ${FALK_IMAGE_DIR:-/var/cache/falk-test-images}/qemu/
#   vmlinuz                   Debian's cloud kernel (booted with -kernel)
#   initrd.img                busybox initramfs: loads the virtio/input modules, mounts /dev/vda
#   base.qcow2                root filesystem (ext4 on the whole disk): busybox + the host's sshd
#   id_ed25519, .pub          client key of users chantal (uid 1000) and root (mode 600)
#   ssh_host_ed25519_key.pub  the guest's host key (public line, for known_hosts)
#   command.example           the qemu argument list the tests use
#
# Cached and idempotent: a stamp holds the sha256 of this script; the guest is rebuilt
# only when the script changes or an output is missing. Concurrent runs are serialised
# with flock. Needs root only to install missing packages (apt-get); the build itself
# works unprivileged (file ownership inside the image is set with debugfs).
#
# Guest facts: user chantal (uid 1000, /home/chantal, /bin/sh) and root log in with
# id_ed25519; static address 10.0.2.15/24 via 10.0.2.2 (QEMU user-mode network);
# the ACPI power button (QMP system_powerdown) and `poweroff` as root end QEMU after a
# sync and a read-only remount of /; a failed boot panics, and panic=-1 with
# -no-reboot makes QEMU exit instead of hanging.
set -euo pipefail

script_path=$(readlink -f "${BASH_SOURCE[0]}")
out="${FALK_IMAGE_DIR:-/var/cache/falk-test-images}/qemu"
outputs=(vmlinuz initrd.img base.qcow2 id_ed25519 id_ed25519.pub ssh_host_ed25519_key.pub command.example)

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Modules the cloud kernel needs, in dependency order (the package has no modules.dep).
# evdev and button give acpid the ACPI power button.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
         failover net_failover virtio_net virtio-rng evdev button)
disk_mib=64
guest_ip=10.0.2.15/24
guest_gw=10.0.2.2
guest_dns=10.0.2.3
kernel_meta=linux-image-cloud-amd64
# cryptomgr.notests, mitigations=off, tsc=reliable, no_timer_check: each saves time under TCG.
kernel_cmdline="console=ttyS0 root=/dev/vda rw panic=-1 quiet cryptomgr.notests mitigations=off tsc=reliable no_timer_check"

# ---------------------------------------------------------------- host packages
ensure_packages() {
    local missing=() cmd pkg
    local -A need=(
        [qemu-img]=qemu-utils [qemu-system-x86_64]=qemu-system-x86
        [mkfs.ext4]=e2fsprogs [debugfs]=e2fsprogs [cpio]=cpio
        [/usr/sbin/sshd]=openssh-server [/usr/lib/openssh/sftp-server]=openssh-sftp-server
        [ssh-keygen]=openssh-client [ssh]=openssh-client
        [zstd]=zstd [xz]=xz-utils [dpkg-deb]=dpkg [flock]=util-linux
    )
    for cmd in "${!need[@]}"; do
        if [[ $cmd == /* ]]; then [[ -x $cmd ]] && continue
        else command -v "$cmd" >/dev/null && continue; fi
        missing+=("${need[$cmd]}")
    done
    # The initramfs needs the static busybox; the `busybox` package's binary is dynamic.
    [[ $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null) == "install ok installed" ]] \
        || missing+=(busybox-static)
    ((${#missing[@]})) || return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    ((EUID == 0)) || die "missing packages (${missing[*]}); run as root or install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}

# ---------------------------------------------------------------- cache check
# One build at a time (and apt-get from one run at a time).
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
ensure_packages
recipe_hash=$(sha256sum "$script_path" | cut -d' ' -f1)
stamp="$out/.stamp"
is_current() {
    [[ -f $stamp && $(<"$stamp") == "$recipe_hash" ]] || return 1
    local f
    for f in "${outputs[@]}"; do [[ -s $out/$f ]] || return 1; done
}
if is_current; then
    log "up to date: $out"
    exit 0
fi

start=$SECONDS
rm -rf "$stamp" "$out"/.build.*
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- kernel
# The meta package depends on the real one (linux-image-<abi>-cloud-amd64). It is
# downloaded and unpacked, never installed on the host.
kernel_pkg() { apt-cache depends "$kernel_meta" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'; }
pkg=$(kernel_pkg || true)
if [[ -z $pkg ]]; then
    ((EUID == 0)) || die "apt-cache does not know $kernel_meta; run apt-get update"
    apt-get update -q >&2
    pkg=$(kernel_pkg)
fi
[[ -n $pkg ]] || die "cannot resolve $kernel_meta"
debs="$out/.debs"
mkdir -p "$debs"
deb=$(find "$debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
if [[ -z $deb ]]; then
    log "downloading $pkg"
    rm -f "$debs"/*.deb
    # Sandbox user root: _apt cannot write into the private download dir.
    (cd "$debs" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2)
    deb=$(find "$debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
    [[ -n $deb ]] || die "apt-get download $pkg produced no .deb"
fi
dpkg-deb -x "$deb" "$work/kpkg"
vmlinuz=$(find "$work/kpkg/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
[[ -n $vmlinuz ]] || die "no vmlinuz in $deb"
moddir=$(find "$work/kpkg" -maxdepth 4 -type d -path '*/lib/modules/*' -name "${vmlinuz##*/vmlinuz-}" | head -n1)
[[ -n $moddir ]] || die "no module directory in $deb"
kver=${moddir##*/}

# Busybox insmod cannot load compressed modules: unpack them here.
mkdir -p "$work/mods"
for m in "${modules[@]}"; do
    src=$(find "$moddir/kernel" -name "$m.ko" -o -name "$m.ko.*" | head -n1)
    [[ -n $src ]] || die "module $m not found in $pkg"
    case $src in
        *.ko) cp "$src" "$work/mods/$m.ko" ;;
        *.ko.xz) xz -dc "$src" >"$work/mods/$m.ko" ;;
        *.ko.zst) zstd -q -dc "$src" >"$work/mods/$m.ko" ;;
        *.ko.gz) gzip -dc "$src" >"$work/mods/$m.ko" ;;
        *) die "unknown module compression: $src" ;;
    esac
done

# ---------------------------------------------------------------- keys
ssh-keygen -q -t ed25519 -N '' -C chantal@falk-test -f "$work/id_ed25519"

# ---------------------------------------------------------------- initramfs
ird="$work/initramfs"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$ird/bin/busybox"
cp "$work/mods/"*.ko "$ird/lib/modules/"
cat >"$ird/init" <<EOF
#!/bin/busybox sh
# Falk test guest initramfs: load the drivers, mount the root disk, switch to it.
# Any failure exits PID 1: the kernel panics and (panic=-1, -no-reboot) QEMU exits.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
fail() { echo "falk-initramfs: \$*" >/dev/console; exit 1; }
root=/dev/vda mode=rw init=/sbin/init
for arg in \$(cat /proc/cmdline); do
    case \$arg in
        root=*) root=\${arg#root=} ;;
        init=*) init=\${arg#init=} ;;
        ro|rw) mode=\$arg ;;
    esac
done
for m in ${modules[*]}; do
    insmod /lib/modules/\$m.ko || fail "insmod \$m failed"
done
i=0
while [ ! -b "\$root" ]; do
    [ \$i -lt 200 ] || fail "\$root did not appear"
    sleep 0.02; i=\$((i + 1))
done
mount -t ext4 -o "\$mode" "\$root" /newroot || fail "cannot mount \$root"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot "\$init"
EOF
chmod 755 "$ird/init"
# newc header for one entry: name, mode, rdev major, rdev minor (no data).
cpio_entry() {
    local name=$1 mode=$2 maj=$3 min=$4 namesize=$((${#1} + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        0 "$mode" 0 0 1 0 0 0 0 "$maj" "$min" "$namesize" 0
    printf '%s\0' "$name"
    local pad=$(((4 - (110 + namesize) % 4) % 4))
    ((pad == 0)) || head -c "$pad" /dev/zero
}
{
    (cd "$ird" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
    # /dev/console as a second archive (the kernel unpacks concatenated archives):
    # no mknod, so this works unprivileged.
    cpio_entry dev/console $((8#020600)) 5 1
    cpio_entry TRAILER!!! 0 0 0
} | gzip -n -6 >"$work/initrd.img"

# ---------------------------------------------------------------- root filesystem
r="$work/root"
mkdir -p "$r"/usr/{bin,sbin,lib,lib64} "$r"/{dev,proc,sys,run,tmp,etc/ssh,root/.ssh,home/chantal/.ssh,mnt,var/log,var/tmp}
ln -s usr/bin "$r/bin"; ln -s usr/sbin "$r/sbin"; ln -s usr/lib "$r/lib"; ln -s usr/lib64 "$r/lib64"
ln -s ../run "$r/var/run"
chmod 1777 "$r/tmp" "$r/var/tmp"
chmod 700 "$r/root" "$r/root/.ssh" "$r/home/chantal" "$r/home/chantal/.ssh"

cp /bin/busybox "$r/usr/bin/busybox"
while read -r applet; do
    case $applet in linuxrc | sbin/init) continue ;; esac
    [[ -e $r/$applet || -L $r/$applet ]] || ln -s /usr/bin/busybox "$r/$applet"
done < <(/bin/busybox --list-full)

# sshd and its libraries from the host.
bins=(/usr/sbin/sshd)
for b in /usr/lib/openssh/sshd-session /usr/lib/openssh/sshd-auth /usr/lib/openssh/sftp-server; do
    [[ -x $b ]] && bins+=("$b")
done
copy_file() { mkdir -p "$r$(dirname "$1")"; cp -L "$1" "$r$1"; }
for b in "${bins[@]}"; do
    copy_file "$b"
    while read -r lib; do
        [[ -e $r$lib ]] || copy_file "$lib"
    done < <(ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
done

# -r: no re-exec per connection (saves a dynamic load of sshd under TCG, ~0.5 s per
# login). OpenSSH >= 9.8 (sshd-session) always execs sshd-session and dropped -r.
sshd_flags="-e -r"
[[ -x /usr/lib/openssh/sshd-session ]] && sshd_flags="-e"

mkdir -p "$r/lib/modules/$kver"
cp "$work/mods/"*.ko "$r/lib/modules/$kver/"

ssh-keygen -q -t ed25519 -N '' -C root@falk-guest -f "$r/etc/ssh/ssh_host_ed25519_key"
cp "$work/id_ed25519.pub" "$r/home/chantal/.ssh/authorized_keys"
cp "$work/id_ed25519.pub" "$r/root/.ssh/authorized_keys"
chmod 600 "$r/home/chantal/.ssh/authorized_keys" "$r/root/.ssh/authorized_keys"

cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534:sshd privilege separation:/run/sshd:/usr/sbin/nologin
chantal:x:1000:1000:Chantal:/home/chantal:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$r/etc/group" <<'EOF'
root:x:0:
tty:x:5:
chantal:x:1000:
nogroup:x:65534:
EOF
# "*": no password, but not locked ("!" would make sshd refuse key logins too).
cat >"$r/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
sshd:*:19000:0:99999:7:::
chantal:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
EOF
chmod 600 "$r/etc/shadow"
printf '/bin/sh\n/bin/ash\n' >"$r/etc/shells"
echo falk-guest >"$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tfalk-guest\n::1\tlocalhost\n' >"$r/etc/hosts"
echo "nameserver $guest_dns" >"$r/etc/resolv.conf"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$r/etc/nsswitch.conf"
cat >"$r/etc/profile" <<'EOF'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
cat >"$r/etc/ssh/sshd_config" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
UseDNS no
PrintMotd no
PrintLastLog no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF

# busybox acpid runs /etc/acpi/<ACTION>/<PARAM> for the power button event.
mkdir -p "$r/etc/acpi/PWRF"
printf '#!/bin/sh\nexec /sbin/poweroff\n' >"$r/etc/acpi/PWRF/00000080"
chmod 755 "$r/etc/acpi/PWRF/00000080"

# PID 1: a shell script (faster to shut down than busybox init). busybox
# poweroff/halt/reboot signal PID 1 with USR2/USR1/TERM.
rm -f "$r/usr/sbin/init"
cat >"$r/usr/sbin/init" <<EOF
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022
say() { read -r up _ </proc/uptime; echo "falk-init: [\$up] \$*" >/dev/console; }

stop() {
    trap '' USR1 USR2 TERM
    say "shutting down (\$1)"
    kill -TERM -1 2>/dev/null
    i=0
    while [ \$i -lt 40 ]; do
        alive=
        for p in /proc/[0-9]*; do
            [ "\$p" = /proc/1 ] || [ ! -e "\$p/exe" ] || { alive=1; break; }
        done
        [ -n "\$alive" ] || break
        sleep 0.05; i=\$((i + 1))
    done
    kill -KILL -1 2>/dev/null
    sync
    i=0
    until mount -o remount,ro /; do
        [ \$i -lt 10 ] || break
        sleep 0.1; i=\$((i + 1))
    done
    sync
    \$1 -f
}
trap 'stop poweroff' USR1 USR2
trap 'stop reboot' TERM
trap '' INT HUP

# The initramfs moved its devtmpfs to /dev; proc and sys were unmounted.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mkdir -m 755 /run/sshd
hostname -F /etc/hostname
say "mounted"

for m in ${modules[*]}; do
    [ -d "/sys/module/\${m//-/_}" ] || insmod "/lib/modules/$kver/\$m.ko"
done

say "modules"
ip link set lo up
ip addr add $guest_ip dev eth0
ip link set eth0 up
ip route add default via $guest_gw

say "network"
acpid -l /run/acpid.log
say "acpid"
# -D -e: stay in the foreground so the log goes to the console (a daemon's stderr is /dev/null).
/usr/sbin/sshd -D $sshd_flags &
i=0
until grep -q '^ *[0-9]*: [0-9A-F]*:0016 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
    [ \$i -lt 250 ] || { say "sshd is not listening"; break; }
    sleep 0.02; i=\$((i + 1))
done
say "ready"

while :; do
    sleep 86400 &
    wait \$!
done
EOF
chmod 755 "$r/usr/sbin/init"

# Ownership inside the image: root everywhere, chantal for her home. Set with debugfs
# so the staging tree may belong to anyone (mkfs.ext4 -d copies the source owners).
truncate -s "${disk_mib}M" "$work/root.img"
mkfs.ext4 -q -F -L falk-root -m 0 -d "$r" "$work/root.img"
(
    cd "$r"
    find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
        p=${p#.}
        case $p in /home/chantal | /home/chantal/*) id=1000 ;; *) id=0 ;; esac
        printf 'sif "%s" uid %s\nsif "%s" gid %s\n' "$p" "$id" "$p" "$id"
    done
    printf 'sif / uid 0\nsif / gid 0\n'
) >"$work/owners.debugfs"
debugfs -w -f "$work/owners.debugfs" "$work/root.img" >/dev/null 2>"$work/debugfs.err"
if grep -v '^debugfs ' "$work/debugfs.err" | grep -q .; then
    cat "$work/debugfs.err" >&2
    die "debugfs failed"
fi
e2fsck -fn "$work/root.img" >/dev/null 2>&1 || die "e2fsck finds the image inconsistent"
qemu-img convert -O qcow2 "$work/root.img" "$work/base.qcow2"

# ---------------------------------------------------------------- outputs
cp "$vmlinuz" "$work/vmlinuz"
cp "$r/etc/ssh/ssh_host_ed25519_key.pub" "$work/ssh_host_ed25519_key.pub"
cat >"$work/command.example" <<EOF
# Falk QEMU test guest ($pkg, kernel $kver). Argument list used by the tests.
# Per-VM values are shell variables: OVERLAY, SSH_PORT, QMP_SOCK, SERIAL_LOG.
#   qemu-img create -f qcow2 -b '$out/base.qcow2' -F qcow2 "\$OVERLAY"
# Log in:  ssh -i '$out/id_ed25519' -p "\$SSH_PORT" chantal@127.0.0.1   (root: same key)
# known_hosts line: [127.0.0.1]:\$SSH_PORT <ssh_host_ed25519_key.pub>
# QEMU accepts TCP on the forwarded port before sshd runs: poll with ~1 s timeouts.
# Stop: QMP system_powerdown (after the SSH banner: acpid must be running) or
# 'ssh root@... poweroff'; QEMU then exits by itself. -accel tcg: KVM may be unusable.
qemu-system-x86_64 \\
  -name falk-guest \\
  -machine q35 -accel tcg -cpu qemu64 -smp 1 -m 256 \\
  -nodefaults -no-user-config -display none -no-reboot \\
  -kernel '$out/vmlinuz' \\
  -initrd '$out/initrd.img' \\
  -append '$kernel_cmdline' \\
  -drive file="\$OVERLAY",if=virtio,format=qcow2,cache=writeback,discard=unmap \\
  -netdev user,id=n0,hostfwd=tcp:127.0.0.1:"\$SSH_PORT"-:22 \\
  -device virtio-net-pci,netdev=n0 \\
  -device virtio-rng-pci \\
  -serial file:"\$SERIAL_LOG" \\
  -qmp unix:"\$QMP_SOCK",server=on,wait=off
EOF

chmod 600 "$work/id_ed25519"
chmod 644 "$work/id_ed25519.pub" "$work/ssh_host_ed25519_key.pub" "$work/vmlinuz" \
    "$work/initrd.img" "$work/base.qcow2" "$work/command.example"
for f in "${outputs[@]}"; do mv -f "$work/$f" "$out/$f"; done
echo "$recipe_hash" >"$stamp"
log "built $out in $((SECONDS - start)) s ($pkg)"
