"""Leases: renewed in the background while a job holds its machine; a job killed outright leaves it to expire."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from falk_client import FalkClient, FalkNotFound

from .conftest import Daemon
from .support import processes_of_machine, wait_until

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


async def test_renewal_keeps_a_machine_with_a_3_second_lease_alive_for_10_seconds(client: FalkClient) -> None:
    async with client.machine("sshd", lease_seconds=3) as m:
        await asyncio.sleep(10)

        await m.refresh()
        assert m.state == "running"
        assert m.lease_seconds_left > 0
        assert processes_of_machine(m.id, m.ssh.port)


async def test_a_machine_without_renewal_expires_with_its_lease(client: FalkClient) -> None:
    m = await client.create("sshd", lease_seconds=3)
    await m.boot()
    started = time.monotonic()

    async def expired() -> bool | None:
        try:
            await m.refresh()
            return None
        except FalkNotFound:
            return True

    await wait_until(expired, 10, "the machine's lease running out")
    assert time.monotonic() - started > 1.5
    assert not processes_of_machine(m.id, m.ssh.port)


async def test_a_client_killed_with_sigkill_leaves_its_machine_to_expire_with_its_lease(daemon: Daemon, client: FalkClient) -> None:
    job = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.hold_machine", str(daemon.socket), "sshd", "3", cwd=PACKAGE_ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        await _sigkilled_job_leaves_machine_to_lease(client, job)
    finally:
        if job.returncode is None:
            job.kill()
            await job.wait()


async def _sigkilled_job_leaves_machine_to_lease(client: FalkClient, job: asyncio.subprocess.Process) -> None:
    assert job.stdout is not None
    machine_id, port = (await asyncio.wait_for(job.stdout.readline(), 60)).decode().split()
    # Renewed while the job lives: still there after more than one lease.
    await asyncio.sleep(4)
    assert (await client.get(machine_id)).state == "running"

    events = client.events()
    await asyncio.wait_for(anext(events), 10)  # subscribed once the next renewal's event arrives

    job.send_signal(signal.SIGKILL)
    await job.wait()
    killed = time.monotonic()

    async def lease_expired() -> bool | None:
        async for e in events:
            if e.machine_id == machine_id and e.type in ("lease_expired", "destroyed"):
                return e.type == "lease_expired"
        return None

    assert await asyncio.wait_for(lease_expired(), 10)
    assert time.monotonic() - killed > 0.5  # it went with the lease, not with the job
    await events.aclose()
    await wait_until(lambda: _gone(client, machine_id), 10, "the expired machine being removed")
    assert not processes_of_machine(machine_id, int(port))


async def _gone(client: FalkClient, machine_id: str) -> bool | None:
    try:
        await client.get(machine_id)
        return None
    except FalkNotFound:
        return True
