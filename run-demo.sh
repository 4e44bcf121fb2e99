#!/usr/bin/env bash
# Starts falkd on a working demo config in ./.demo: a custom template that runs Debian's sshd on the
# machine's port, with a host key and a login key made here. Then try the curl session in README.md.
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

cat > "$demo/falk.conf" <<CONF
# Falk demo config, written by run-demo.sh.
[falk]
name = falk-demo
control_socket = $demo/falk.sock
control_socket_permissions = 770
vm_ports = [7888,7999]
state_dir = $demo/state

# A "machine" that is Debian's sshd on the allocated port: the smallest thing a CI job can SSH into.
[local-sshd]
type = custom
launch = /usr/sbin/sshd -D -e -p {SSHPORT} -f $demo/sshd_config
ssh_user = $(id -un)
ssh_host = 127.0.0.1
ssh_known_host_key_file = ssh_host_ed25519_key.pub
CONF

echo "run-demo: falkd on $demo/falk.sock (config $demo/falk.conf); Ctrl-C stops it"
dotnet build Falk.Api -c Release -v quiet -nologo
exec dotnet Falk.Api/bin/Release/net10.0/falkd.dll --config "$demo/falk.conf"
