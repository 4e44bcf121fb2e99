"""The daemon's info and templates, and a machine's console, read and followed."""

from __future__ import annotations

import asyncio

import pytest

from falk_client import FalkClient, FalkConflict


async def test_info_and_templates_describe_the_daemon(client: FalkClient) -> None:
    info = await client.info()
    templates = {t.name: t for t in await client.templates()}

    assert info.name == "falk-py-test" and info.api_version and "custom" in info.backends
    assert info.capacity.ports_total == 20
    assert templates["sshd"].type == "custom" and templates["sshd"].host_key_source == "config"
    assert templates["sshd"].host_key_verified
    assert templates["sshd-unpinned"].host_key_source == "observed" and not templates["sshd-unpinned"].host_key_verified
    assert await client.template("sshd") == templates["sshd"]


async def test_the_console_is_read_and_followed_until_the_machine_stops(client: FalkClient) -> None:
    async with client.machine("sshd", lease_seconds=60) as m:
        assert "Server listening" in await m.console()

        async def follow() -> str:
            return "".join([text async for text in m.console(follow=True)])

        followed = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        assert not followed.done()
        await m.stop(timeout=5)

        text = await asyncio.wait_for(followed, 20)
        assert "Server listening" in text and "Received signal 15" in text
        assert m.state == "stopped"


async def test_snapshots_of_a_backend_without_them_are_a_conflict(client: FalkClient) -> None:
    async with client.machine("sshd", lease_seconds=60) as m:
        with pytest.raises(FalkConflict) as caught:
            await m.snapshots.create("before")
        assert caught.value.code == "not-supported"
        with pytest.raises(FalkConflict) as caught:
            await m.snapshots.delete("before")
        assert caught.value.code == "not-supported"
