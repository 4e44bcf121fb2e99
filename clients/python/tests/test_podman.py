"""The context manager with a podman template: a real container, logged into over SSH as chantal, removed afterwards."""

from __future__ import annotations

import asyncio

import pytest

from falk_client import FalkNotFound

from .conftest import PodmanSetup, podman

pytestmark = pytest.mark.podman


async def test_a_podman_machine_is_logged_into_with_the_key_made_for_it_and_removed(podman_daemon: PodmanSetup) -> None:
    async with podman_daemon.daemon.client() as client:
        async with client.machine("debian-ssh", lease_seconds=30, labels={"job": "py-podman"}) as m:
            assert m.state == "running" and m.ssh.verified and m.ssh.host_key_source == "machine"
            containers = podman("ps", "-q", "--filter", f"label=org.falk.machine={m.id}")
            assert len(containers) == 1

            process = await asyncio.create_subprocess_exec(
                *m.ssh_command("id", "-un", identity=podman_daemon.client_key), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert (process.returncode, out.decode()) == (0, "chantal\n"), err.decode()
            machine_id = m.id

        with pytest.raises(FalkNotFound):
            await client.get(machine_id)
    assert podman("ps", "-a", "-q", "--filter", f"label=org.falk.machine={machine_id}") == []


async def test_a_cancelled_podman_job_leaves_no_container(podman_daemon: PodmanSetup) -> None:
    async with podman_daemon.daemon.client() as client:
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def job() -> None:
            async with client.machine("debian-ssh", lease_seconds=30) as m:
                started.set_result(m.id)
                await asyncio.sleep(3600)

        task = asyncio.create_task(job())
        machine_id = await asyncio.wait_for(started, 120)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert podman("ps", "-a", "-q", "--filter", f"label=org.falk.machine={machine_id}") == []


async def test_a_management_machine_commits_its_changes_as_the_templates_new_image(podman_daemon: PodmanSetup) -> None:
    async with podman_daemon.daemon.client() as client:
        async with client.machine("debian-ssh", lease_seconds=60, manage=True) as m:
            assert m.manage
            argv = m.ssh_command("sh", "-c", "echo committed-by-python > ~/marker", identity=podman_daemon.client_key)
            assert await (await asyncio.create_subprocess_exec(*argv)).wait() == 0

            result = await m.commit(timeout=10)

            assert (result.machine_id, result.template) == (m.id, "debian-ssh") and result.version
            assert m.state == "stopped"

        async with client.machine("debian-ssh", lease_seconds=60) as fresh:
            process = await asyncio.create_subprocess_exec(
                *fresh.ssh_command("cat", "marker", identity=podman_daemon.client_key), stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(process.communicate(), 60)
            assert out.decode() == "committed-by-python\n"
