#!/usr/bin/env bash
# Starts falkd on a working demo config in ./.demo with three templates:
#   local-sshd  (custom) Debian's sshd on the machine's port, with a host key and a login key made here;
#   debian-ssh  (podman) a container of the test image built from Debian packages (images/podman);
#   tiny-vm     (qemu)   a small QEMU guest built from Debian packages (images/qemu), under TCG by default
#                        (FALK_DEMO_ACCEL=kvm where KVM works).
# The first run builds the two images (about a minute); later runs reuse them. Then try README's curl session.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
demo=$root/.demo
./scripts/install-deps.sh
mkdir -p "$demo/state"

# Keys: the machine's host key (pinned by the template) and the key a CI job logs in with.
[ -f "$demo/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C falk-demo-host -f "$demo/ssh_host_ed25519_key"
[ -f "$demo/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C falk-demo-client -f "$demo/id_ed25519"
cp "$demo/id_ed25519.pub" "$demo/authorized_keys"
# sshd needs its privilege separation folder (its init script would make it).
[ "$(id -u)" -ne 0 ] || mkdir -p /run/sshd

cat > "$demo/sshd_config" <<SSHD
HostKey $demo/ssh_host_ed25519_key
AuthorizedKeysFile $demo/authorized_keys
ListenAddress 127.0.0.1
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
SSHD

# The podman image and the QEMU guest, cached under /var/cache/falk-test-images (FALK_IMAGE_DIR).
images=${FALK_IMAGE_DIR:-/var/cache/falk-test-images}
./images/podman/build-image.sh
./images/qemu/build-guest.sh
# The demo's own copy of the guest disk: commits from management sessions go there, not into the cache.
[ -f "$demo/tiny-vm.qcow2" ] || cp "$images/qemu/base.qcow2" "$demo/tiny-vm.qcow2"

# podman's Docker-compatible API service, on a socket of the demo's own, with the containers.conf this
# machine's podman needs (runc, lowered ulimits); stopped when falkd stops.
CONTAINERS_CONF=$root/images/podman/containers.conf podman system service --time=0 "unix://$demo/podman.sock" &
podman_service=$!
trap 'kill $podman_service 2>/dev/null || true' EXIT

cat > "$demo/falk.conf" <<CONF
# Falk demo config, written by run-demo.sh.
[falk]
name = falk-demo
control_socket = $demo/falk.sock
control_socket_permissions = 770
vm_ports = [7888,7999]
state_dir = $demo/state
podman_socket = unix://$demo/podman.sock

# A "machine" that is Debian's sshd on the allocated port: the smallest thing a CI job can SSH into.
[local-sshd]
type = custom
launch = /usr/sbin/sshd -D -e -p {SSHPORT} -f $demo/sshd_config
ssh_user = $(id -un)
ssh_host = 127.0.0.1
ssh_known_host_key_file = ssh_host_ed25519_key.pub

# A container of an image built from Debian packages; its host key is read out of the image.
# Log in with: ssh -i $images/podman/id_ed25519 -p PORT chantal@127.0.0.1
[debian-ssh]
type = podman
base_image = localhost/falk-test-sshd:latest
ssh_user = chantal
ssh_host = 127.0.0.1

# A small VM: Debian's cloud kernel, busybox and sshd on a qcow2 disk. Falk adds QMP, the serial
# console, a pid file and -name itself. Log in with: ssh -i $images/qemu/id_ed25519 -p PORT chantal@127.0.0.1
[tiny-vm]
type = qemu
base_image = $demo/tiny-vm.qcow2
command = qemu-system-x86_64 -machine q35 -accel ${FALK_DEMO_ACCEL:-tcg} -cpu qemu64 -smp 1 -m 256 -nodefaults -no-user-config -display none -no-reboot -kernel $images/qemu/vmlinuz -initrd $images/qemu/initrd.img -append 'console=ttyS0 root=/dev/vda rw panic=-1 quiet cryptomgr.notests mitigations=off tsc=reliable no_timer_check' -drive file={IMAGENAME},if=virtio,format=qcow2,cache=writeback,discard=unmap -netdev user,id=n0,hostfwd=tcp:127.0.0.1:{SSHPORT}-:22 -device virtio-net-pci,netdev=n0 -device virtio-rng-pci
ssh_user = chantal
ssh_host = 127.0.0.1
ssh_known_host_key_file = $images/qemu/ssh_host_ed25519_key.pub
CONF

echo "run-demo: falkd on $demo/falk.sock (config $demo/falk.conf); Ctrl-C stops it"
dotnet build Falk.Api -c Release -v quiet -nologo
dotnet Falk.Api/bin/Release/net10.0/falkd.dll --config "$demo/falk.conf"
