"""falk_client.kevin: Kevin's job flow (pick by name, prepare, launch, connection info, ssh, terminate, cleanup) on a real falkd."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from falk_client import FalkClient, FalkNotFound
from falk_client.kevin import FalkError, FalkSocket, SSHTimeoutError, VMError, connect

from .conftest import Daemon, SshFiles
from .support import processes_of_machine


async def kevin_ssh(vm_user: str, host: str, port: int, key: str, identity: Path, tmp_path: Path, *command: str) -> tuple[int, str]:
    """What Kevin does for each ssh call: a fresh known_hosts with ``[host]:port KEY`` and StrictHostKeyChecking=yes."""
    known_hosts = tmp_path / f"known_hosts-{random.randrange(1 << 30)}"
    known_hosts.write_text(f"[{host}]:{port} {key}\n")
    process = await asyncio.create_subprocess_exec(
        "ssh", "-q", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        "-i", str(identity), "-p", str(port), f"{vm_user}@{host}", "--", *command,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_kevins_job_flow_runs_on_the_rest_api(daemon: Daemon, client: FalkClient, ssh_files: SshFiles, tmp_path: Path) -> None:
    async with connect("falk", f"unix://kevin@{daemon.socket}") as falk:
        machines = await falk.get_vms()
        assert machines["sshd"] == ["Custom", "sshd"]
        by_name = [machine_id for machine_id, (_, name) in machines.items() if name == "sshd"]
        vm = await falk.create_vm(random.choice(by_name))
        assert not (await vm.status()).running

        await vm.prepare(manage=False)
        await vm.launch()
        await vm.wait_for_ssh_port(timeout=60)

        assert vm.run_id is not None and (await vm.status()).running
        assert vm.ssh_user is not None and vm.ssh_host is not None
        assert (vm.ssh_user, vm.ssh_host) == (ssh_files.user, "127.0.0.1")
        assert vm.ssh_port is not None and vm.ssh_known_host_key is not None
        assert vm.ssh_known_host_key == ssh_files.host_public_key.read_text().strip().rsplit(" ", 1)[0]
        code, out = await kevin_ssh(vm.ssh_user, vm.ssh_host, vm.ssh_port, vm.ssh_known_host_key, ssh_files.client_key, tmp_path, "echo", "chantal")
        assert (code, out) == (0, "chantal\n")

        await vm.terminate()
        assert not (await vm.status()).running
        assert not processes_of_machine(vm.run_id, vm.ssh_port)
        await vm.cleanup()

        with pytest.raises(FalkNotFound):
            await client.get(vm.run_id)


async def test_closing_the_falk_deletes_the_machines_kevin_did_not_clean_up(daemon: Daemon, client: FalkClient) -> None:
    falk = FalkSocket("falk", str(daemon.socket), "kevin", lease_seconds=60)
    await falk.create()
    launched = await falk.create_vm("sshd")
    await launched.launch()
    prepared = await falk.create_vm("sshd")
    await prepared.prepare()
    disconnected: list[object] = []
    falk.on_disconnect(disconnected.append)

    await falk.close()

    assert disconnected == [falk]
    for vm in (launched, prepared):
        assert vm.run_id is not None
        with pytest.raises(FalkNotFound):
            await client.get(vm.run_id)
    assert launched.ssh_port is not None and not processes_of_machine(launched.run_id or "", launched.ssh_port)


async def test_a_failed_launch_raises_vm_error_and_close_still_deletes_the_machine(daemon: Daemon, client: FalkClient) -> None:
    async with FalkSocket("falk", str(daemon.socket), "kevin", lease_seconds=60) as falk:
        vm = await falk.create_vm("sshd-wrong-key")
        with pytest.raises(VMError, match="host-key|host key"):
            await vm.launch()
        run_id = vm.run_id
        assert run_id is not None
    with pytest.raises(FalkNotFound):
        await client.get(run_id)


async def test_wait_for_shutdown_returns_once_the_machine_stops_by_itself(daemon: Daemon, client: FalkClient) -> None:
    async with FalkSocket("falk", str(daemon.socket), "kevin", lease_seconds=60) as falk:
        vm = await falk.create_vm("sshd")
        await vm.launch()
        with pytest.raises(VMError):
            await vm.wait_for_shutdown(timeout=1)
        assert vm.run_id is not None and vm.ssh_port is not None

        for pid in processes_of_machine(vm.run_id, vm.ssh_port):
            os.kill(pid, signal.SIGTERM)  # the guest powers itself off
        await vm.wait_for_shutdown(timeout=20)

        assert not (await vm.status()).running
        await vm.terminate()  # fine on a stopped machine
        await vm.cleanup()


async def test_wait_for_ssh_port_times_out_on_a_port_without_ssh(daemon: Daemon) -> None:
    async with FalkSocket("falk", str(daemon.socket), "kevin", lease_seconds=60) as falk:
        vm = await falk.create_vm("never-ready")
        await vm.prepare()
        with pytest.raises(SSHTimeoutError):
            await vm.wait_for_ssh_port(timeout=1)
        await vm.cleanup()


async def test_an_unknown_machine_name_and_a_missing_socket_fail_as_kevin_expects(daemon: Daemon, tmp_path: Path) -> None:
    async with FalkSocket("falk", str(daemon.socket), "kevin") as falk:
        with pytest.raises(FalkError):
            await falk.create_vm("no-such-machine")
    with pytest.raises(FileNotFoundError, match="missing"):
        await FalkSocket("falk", str(tmp_path / "nothing.sock"), "kevin").create()
