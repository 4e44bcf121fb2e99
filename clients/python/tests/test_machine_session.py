"""The context manager's whole life against a real falkd with Debian's sshd as the machine."""

from __future__ import annotations

import asyncio

import pytest

from falk_client import FalkClient, FalkNotFound, UnverifiedHostKey

from .conftest import SshFiles
from .support import processes_of_machine, wait_until


async def ssh_run(argv: list[str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def gone(client: FalkClient, machine_id: str, port: int | None = None) -> bool:
    """The API no longer knows the machine and none of its processes is left."""
    try:
        await client.get(machine_id)
        return False
    except FalkNotFound:
        return not processes_of_machine(machine_id, port)


async def test_a_machine_is_created_booted_logged_into_with_its_pinned_key_and_deleted(client: FalkClient, ssh_files: SshFiles) -> None:
    async with client.machine("sshd", lease_seconds=60, labels={"job": "py-1"}) as m:
        assert m.state == "running"
        assert m.labels == {"job": "py-1"}
        assert m.ssh.verified and m.ssh.host_key_source == "config"
        known_hosts = m.known_hosts_file()
        assert known_hosts.read_text() == f"{m.ssh.known_hosts_line}\n"

        code, out, err = await ssh_run(m.ssh_command("printf", "%s|", "hello from", "$(hostname)", identity=ssh_files.client_key, known_hosts=known_hosts))

        assert (code, out) == (0, "hello from|$(hostname)|"), err  # the arguments arrive as given
        assert processes_of_machine(m.id, m.ssh.port)
        machine_id, port = m.id, m.ssh.port

    assert not known_hosts.exists()
    assert await gone(client, machine_id, port)


async def test_ssh_refuses_a_machine_whose_known_hosts_holds_another_key(client: FalkClient, ssh_files: SshFiles, tmp_path: object) -> None:
    async with client.machine("sshd", lease_seconds=60) as m:
        wrong = m.known_hosts_file()
        other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvRnYOGaF3M+Q3nx9s5ZVrdC6XzTuhCQn0eVkO9sFmA"
        wrong.write_text(f"[{m.ssh.host}]:{m.ssh.port} {other_key}\n")

        code, _, err = await ssh_run(m.ssh_command("true", identity=ssh_files.client_key, known_hosts=wrong))

        assert code == 255 and "host key" in err.lower(), err


async def test_an_unverified_host_key_is_refused_unless_allowed(client: FalkClient) -> None:
    async with client.machine("sshd-unpinned", lease_seconds=60) as m:
        assert not m.ssh.verified and m.ssh.host_key_source == "observed"
        with pytest.raises(UnverifiedHostKey):
            m.known_hosts_file()
        assert m.known_hosts_file(allow_unverified=True).read_text() == f"{m.ssh.known_hosts_line}\n"


async def test_the_machine_is_deleted_when_the_job_raises(client: FalkClient) -> None:
    seen = []
    with pytest.raises(RuntimeError, match="the job failed"):
        async with client.machine("sshd", lease_seconds=60) as m:
            seen.append((m.id, m.ssh.port))
            assert processes_of_machine(m.id, m.ssh.port)
            raise RuntimeError("the job failed")

    assert await gone(client, *seen[0])


async def test_the_machine_is_deleted_when_the_job_is_cancelled(client: FalkClient) -> None:
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def job() -> None:
        async with client.machine("sshd", lease_seconds=60) as m:
            started.set_result((m.id, m.ssh.port))
            await asyncio.sleep(3600)

    task = asyncio.create_task(job())
    machine_id, port = await asyncio.wait_for(started, 60)
    assert processes_of_machine(machine_id, port)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(client, machine_id, port)


async def test_a_second_cancellation_during_the_deletion_does_not_stop_it(client: FalkClient) -> None:
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def job() -> None:
        async with client.machine("sshd", lease_seconds=60) as m:
            started.set_result((m.id, m.ssh.port))
            await asyncio.sleep(3600)

    task = asyncio.create_task(job())
    machine_id, port = await asyncio.wait_for(started, 60)
    task.cancel()
    for _ in range(3):
        await asyncio.sleep(0)  # the deletion has started
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(client, machine_id, port)


async def test_a_machine_cancelled_while_it_boots_is_deleted(client: FalkClient) -> None:
    task = asyncio.create_task(client.machine("never-ready", lease_seconds=60, boot_timeout=120).__aenter__())

    async def booting() -> str | None:
        machines = [m for m in await client.machines() if m.template == "never-ready" and m.state == "booting"]
        return machines[0].id if machines else None

    machine_id = await wait_until(booting, 30, "a never-ready machine booting")
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(client, machine_id)
    assert not [m for m in await client.machines() if m.template == "never-ready"]
