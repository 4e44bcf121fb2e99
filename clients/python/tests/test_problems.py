"""Every problem+json answer raises its FalkProblem subclass; no daemon on the socket raises FalkUnavailable naming the path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from falk_client import (
    FalkBackendFailed,
    FalkBackendUnavailable,
    FalkBadRequest,
    FalkCapacity,
    FalkClient,
    FalkConflict,
    FalkNotFound,
    FalkProblem,
    FalkTimeout,
    FalkUnavailable,
)

from .conftest import Daemon

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


async def test_an_unknown_machine_is_falk_not_found(client: FalkClient) -> None:
    with pytest.raises(FalkNotFound) as caught:
        await client.get("nosuchmachine")

    e = caught.value
    assert (e.status, e.type, e.code) == (404, "urn:falk:problem:machine-not-found", "machine-not-found")
    assert e.title and e.detail and "nosuchmachine" in e.detail


async def test_an_unknown_template_is_falk_not_found(client: FalkClient) -> None:
    with pytest.raises(FalkNotFound) as caught:
        await client.create("no-such-template")
    assert caught.value.code == "template-not-found"


async def test_bad_input_is_falk_bad_request_naming_the_field(client: FalkClient) -> None:
    with pytest.raises(FalkBadRequest) as caught:
        await client.create("sshd", labels={"bad key!": "x"})
    assert caught.value.status == 400 and caught.value.extensions.get("field")


async def test_an_operation_in_the_wrong_state_is_falk_conflict_carrying_the_state(client: FalkClient) -> None:
    m = await client.create("sshd", lease_seconds=60)
    try:
        with pytest.raises(FalkConflict) as caught:
            await m.wait_stopped(timeout=1)
        assert caught.value.status == 409 and caught.value.state == "prepared"
    finally:
        await m.delete()


async def test_no_free_machine_is_falk_capacity_with_retry_after(client: FalkClient) -> None:
    m = await client.create("sshd-one", lease_seconds=60)
    try:
        with pytest.raises(FalkCapacity) as caught:
            await client.create("sshd-one", lease_seconds=60)
        e = caught.value
        assert (e.status, e.code) == (503, "capacity-exhausted")
        assert e.retry_after is not None and e.retry_after > 0
    finally:
        await m.delete()


async def test_ssh_that_never_comes_up_is_falk_timeout_with_the_last_probe_error(client: FalkClient) -> None:
    m = await client.create("never-ready", lease_seconds=60)
    try:
        with pytest.raises(FalkTimeout) as caught:
            await m.boot(wait_ssh=True, timeout=2)
        assert caught.value.status == 504 and "last error" in (caught.value.detail or "")
    finally:
        await m.delete()


async def test_a_host_key_other_than_the_pinned_one_is_falk_backend_failed(client: FalkClient) -> None:
    with pytest.raises(FalkBackendFailed) as caught:
        async with client.machine("sshd-wrong-key", lease_seconds=60, boot_timeout=30):
            raise AssertionError("a machine showing another host key must not be handed out")
    assert (caught.value.status, caught.value.code) == (502, "host-key-mismatch")
    assert not [m for m in await client.machines() if m.template == "sshd-wrong-key"]


async def test_a_backend_that_does_not_answer_is_falk_backend_unavailable_naming_its_socket(client: FalkClient) -> None:
    with pytest.raises(FalkBackendUnavailable) as caught:
        await client.create("podman-down", lease_seconds=60)
    e = caught.value
    assert (e.status, e.code) == (503, "backend-unavailable") and "podman.sock" in (e.detail or "")
    assert not isinstance(e, FalkCapacity)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as nobody")
def test_a_user_the_daemon_does_not_allow_gets_falk_forbidden(falkd_dll: Path) -> None:
    daemon = Daemon(falkd_dll, "", extra="allowed_users = root", permissions="777")
    try:
        # A client running as nobody: it reaches the socket, and the daemon refuses its uid (SO_PEERCRED).
        script = (
            "import asyncio, sys; sys.path.insert(0, sys.argv[1]); from falk_client import FalkClient, FalkProblem\n"
            "async def main():\n"
            "    async with FalkClient(sys.argv[2]) as c:\n"
            "        try: await c.machines()\n"
            "        except FalkProblem as e: print(type(e).__name__, e.status, e.code)\n"
            "asyncio.run(main())\n"
        )
        done = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", script, str(PACKAGE_ROOT), str(daemon.socket)],
            capture_output=True, text=True, timeout=30,
        )
        assert done.stdout.split() == ["FalkForbidden", "403", "access-denied"], done.stderr
    finally:
        daemon.stop()


async def test_every_problem_is_a_falk_problem(client: FalkClient) -> None:
    with pytest.raises(FalkProblem):
        await client.template("no-such-template")


async def test_a_missing_socket_is_falk_unavailable_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.sock"
    async with FalkClient(path) as client:
        with pytest.raises(FalkUnavailable) as caught:
            await client.info()
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)


async def test_a_socket_nobody_listens_on_is_falk_unavailable_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # bound, never listening: connections are refused
    async with FalkClient.from_url(f"unix://kevin@{path}") as client:
        assert client.user == "kevin"
        with pytest.raises(FalkUnavailable) as caught:
            await client.machines()
    assert str(path) in str(caught.value) and "refused" in caught.value.reason.lower()


def test_socket_urls_of_both_forms_are_understood() -> None:
    assert FalkClient.from_url("unix:///run/falk/falk.sock").socket_path == "/run/falk/falk.sock"
    assert FalkClient.from_url("unix://kevin@/run/kevin/falk").socket_path == "/run/kevin/falk"
    assert FalkClient.from_url("unix://kevin@/run/kevin/falk").user == "kevin"
    assert FalkClient.from_url("/run/falk/falk.sock").socket_path == "/run/falk/falk.sock"
    with pytest.raises(ValueError):
        FalkClient.from_url("http://localhost/")
    with pytest.raises(ValueError):
        FalkClient.from_url("unix://somehost/run/falk.sock")
