"""
The machine interface Kevin's job code uses with the original Falk (``kevin.falk`` / ``kevin.falkvm``), on the REST
API: moving Kevin to falkd is a change of import.

    from falk_client.kevin import FalkSocket, FalkError, VMError

    async with FalkSocket("falk", "/run/falk/falk.sock", "kevin") as falk:
        vms = await falk.get_vms()                 # {section id: [backend class, name]}
        vm = await falk.create_vm("debian")        # section id, or a template name
        await vm.prepare(manage=False)
        await vm.launch()                          # answers once SSH shows the pinned host key
        await vm.wait_for_ssh_port()
        ...  # vm.ssh_user, vm.ssh_host, vm.ssh_port, vm.ssh_known_host_key
        await vm.terminate()
        await vm.cleanup()

What differs from the original protocol, on purpose: a machine is made at ``prepare`` (the REST create prepares it);
``launch`` waits until SSH presents the expected host key; run ids are the machine ids (strings); while the
``Falk`` is open every machine it prepared has its lease renewed, and closing it deletes the machines not cleaned up,
as the original did when its control connection dropped. A Kevin killed outright leaves its machines to expire
with their lease (``lease_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
import types
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

from . import errors
from ._client import FalkClient, Machine, keep_lease, stop_task
from .errors import FalkConflict, FalkUnavailable

log = logging.getLogger("falk_client.kevin")

_T = TypeVar("_T")

# The original's backend class names, as MachineList shows them.
_BACKEND_CLASSES = {"custom": "Custom", "podman": "Podman", "qemu": "QEMU", "lxd": "LXD"}
# A guest paused at a QEMU monitor is still up: it has not ended.
_RUNNING_STATES = frozenset({"booting", "running", "paused", "stopping"})


class FalkError(errors.FalkError):
    """Falk did something fishy or could not be reached (Kevin's ``kevin.falkvm.FalkError``)."""


class VMError(FalkError):
    """A request about one machine failed (Kevin's ``kevin.falkvm.VMError``)."""


class SSHTimeoutError(VMError):
    """:meth:`FalkVM.wait_for_ssh_port` ran out of time."""


@dataclass(frozen=True)
class VMStatus:
    """The answer to ``status()``: ``running`` is false before launch and after the machine stopped."""

    run_id: str | None
    running: bool


class Falk:
    """
    One falkd, as Kevin's ``Falk`` saw it. ``lease_seconds`` is the lease of each machine (renewed while this
    object is open); ``boot_timeout`` bounds ``launch``'s wait for SSH.
    """

    def __init__(self, name: str, client: FalkClient, *, lease_seconds: int = 120, boot_timeout: float = 300) -> None:
        self.name = name
        self.client = client
        self.lease_seconds = lease_seconds
        self.boot_timeout = boot_timeout
        self.active = True
        self.disconnect_callbacks: list[Callable[[Falk], object]] = []
        self._vms: set[FalkVM] = set()

    async def create(self) -> None:
        """Checks that falkd answers (the original's handshake). A missing socket raises FileNotFoundError, as Kevin expects."""
        try:
            info = await self.client.info()
        except FalkUnavailable as e:
            await self.client.close()
            if "No such file" in e.reason:
                raise FileNotFoundError(f"falk socket not found: '{e.path}' missing") from e
            raise FalkError(f"falk socket doesn't accept connections at '{e.path}'") from e
        log.info("[falk] '%s' says: falkd %s (API %s)", info.name, info.version, info.api_version)

    async def get_vms(self) -> dict[str, list[str]]:
        """``{section id: [backend class, name]}``: Kevin groups the ids by name and picks one."""
        templates = await self._call("list machines", self.client.templates())
        return {t.id: [_BACKEND_CLASSES.get(t.type, t.type), t.name] for t in templates}

    async def create_vm(self, machine_id: str) -> FalkVM:
        """A handle on a machine of the template with section id (or name) ``machine_id``; nothing is made before ``prepare``."""
        templates = await self._call("list machines", self.client.templates())
        template = next((t for t in templates if t.id == machine_id), None) or next((t for t in templates if t.name == machine_id), None)
        if template is None:
            raise FalkError(f"falk query failed: no machine {machine_id!r}")
        return FalkVM(self, template.id, template.name)

    def get_vm_host(self) -> str:
        return "localhost"

    def on_disconnect(self, callback: Callable[[Falk], object]) -> None:
        """``callback(falk)`` is called when this Falk is closed."""
        if not callable(callback):
            raise ValueError(f"invalid callback: {callback}")
        self.disconnect_callbacks.append(callback)

    async def close(self) -> None:
        """Deletes every machine prepared here and not cleaned up (the original did so on disconnect), then closes the client."""
        vms, self._vms = list(self._vms), set()
        for vm in vms:
            try:
                await vm.cleanup()
            except FalkError as e:
                log.warning("[falk] cleaning up %s on close: %s (its lease will end it)", vm.run_id, e)
        await self.client.close()
        for callback in self.disconnect_callbacks:
            callback(self)

    async def __aenter__(self) -> Falk:
        await self.create()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None) -> None:
        await self.close()

    async def _call(self, what: str, awaitable: Awaitable[_T], error: type[FalkError] = FalkError) -> _T:
        try:
            return await awaitable
        except errors.FalkError as e:
            raise error(f"Failed to {what}: {e}") from e


class FalkSocket(Falk):
    """Falk on a Unix socket, as Kevin's ``FalkSocket(name, path, user)``; the user is only shown (the daemon reads the peer's uid)."""

    def __init__(self, name: str, path: str, user: str | None = None, loop: object = None, *, lease_seconds: int = 120, boot_timeout: float = 300) -> None:
        del loop  # accepted for Kevin's signature; asyncio's running loop is used
        super().__init__(name, FalkClient(path, user=user), lease_seconds=lease_seconds, boot_timeout=boot_timeout)
        self.path = path
        self.user = user

    def __str__(self) -> str:
        return f"<FalkSocket {self.user}@{self.path}>"


def connect(name: str, url: str, *, lease_seconds: int = 120, boot_timeout: float = 300) -> FalkSocket:
    """A kevin.conf ``[falk]`` entry: ``name = unix://user@/run/falk/falk.sock`` or ``unix:///run/falk/falk.sock``."""
    client = FalkClient.from_url(url)
    return FalkSocket(name, client.socket_path, client.user, lease_seconds=lease_seconds, boot_timeout=boot_timeout)


class FalkVM:
    """
    One machine, as Kevin's ``FalkVM``: ``prepare``, ``launch``, ``status``, ``wait_for_ssh_port``,
    ``wait_for_shutdown``, ``terminate``, ``cleanup``; after ``launch`` ``ssh_user``, ``ssh_host``, ``ssh_port`` and
    ``ssh_known_host_key`` say how to log in. ``run_id`` is the machine's id once prepared.
    """

    def __init__(self, falk: Falk, machine_id: str, name: str) -> None:
        self.falk = falk
        self.machine_id = machine_id
        self.name = name
        self.run_id: str | None = None
        self.machine: Machine | None = None
        self.ssh_user: str | None = None
        self.ssh_host: str | None = None
        self.ssh_port: int | None = None
        self.ssh_known_host_key: str | None = None
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<FalkVM {self.machine_id} run_id={self.run_id}>"

    @classmethod
    def dynamic_ssh_config(cls) -> bool:
        return True

    async def prepare(self, manage: bool = False) -> None:
        if self.machine is not None:
            raise VMError(f"Failed to prepare: machine {self.run_id} is already prepared")
        key = f"falk-kevin-{uuid.uuid4()}"
        try:
            machine = await self.falk.client.create(self.name, lease_seconds=self.falk.lease_seconds, manage=manage, idempotency_key=key)
        except FalkUnavailable:
            # The answer may have been lost on the way: the same key gets the same machine, or makes it now.
            machine = await self.falk._call("prepare", self.falk.client.create(self.name, lease_seconds=self.falk.lease_seconds, manage=manage, idempotency_key=key), VMError)
        except errors.FalkError as e:
            raise VMError(f"Failed to prepare: {e}") from e
        self.machine = machine
        self.run_id = machine.id
        self.falk._vms.add(self)
        self._renewer = keep_lease(machine, self.falk.lease_seconds)
        self._take_ssh(machine)

    async def launch(self) -> None:
        """Boots the machine (preparing it first if needed) and waits until SSH presents the expected host key."""
        if self.machine is None:
            await self.prepare()
        machine = self._machine()
        await self.falk._call("launch machine", machine.boot(wait_ssh=True, timeout=self.falk.boot_timeout), VMError)
        self._take_ssh(machine)

    async def status(self) -> VMStatus:
        if self.machine is None:
            return VMStatus(self.run_id, False)
        machine = await self.falk._call("get status", self.machine.refresh(), VMError)
        return VMStatus(self.run_id, machine.state in _RUNNING_STATES)

    async def is_running(self) -> bool:
        return (await self.status()).running

    async def wait_for_ssh_port(self, timeout: float = 60, retry_delay: float = 0.2, try_timeout: float = 15) -> None:
        """Waits until the machine's SSH port answers with an SSH banner; raises :class:`SSHTimeoutError` after ``timeout`` seconds."""
        if self.ssh_host is None or self.ssh_port is None:
            raise VMError("Failed to wait for ssh: the machine was not launched")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "not tried"
        while True:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.ssh_host, self.ssh_port), try_timeout)
                try:
                    banner = await asyncio.wait_for(reader.readline(), try_timeout)
                finally:
                    writer.close()
                if banner.startswith(b"SSH-"):
                    return
                last = f"no SSH banner: {banner[:40]!r}"
            except (OSError, asyncio.TimeoutError) as e:
                last = str(e) or type(e).__name__
            if loop.time() + retry_delay > deadline:
                raise SSHTimeoutError(f"ssh {self.ssh_user}@{self.ssh_host}:{self.ssh_port} did not answer within {timeout:g} s: {last}")
            await asyncio.sleep(retry_delay)

    async def wait_for_shutdown(self, timeout: float = 20) -> None:
        """Waits until the machine stops by itself; an error when it does not within ``timeout`` or never ran."""
        await self.falk._call("wait for shutdown", self._machine().wait_stopped(timeout=timeout), VMError)

    async def terminate(self) -> None:
        """Powers the machine down (forced after 10 s); fine when it never ran or already stopped."""
        if self.machine is None:
            return
        try:
            await self.machine.stop(timeout=10)
        except FalkConflict:
            pass  # prepared, or stopped already
        except errors.FalkError as e:
            raise VMError(f"Failed to kill machine: {e}") from e

    async def cleanup(self) -> None:
        """Deletes the machine and stops renewing its lease."""
        if self._renewer is not None:
            await stop_task(self._renewer)
            self._renewer = None
        if self.machine is not None:
            await self.falk._call("clean up", self.machine.delete(), VMError)
        self.falk._vms.discard(self)

    def _machine(self) -> Machine:
        if self.machine is None:
            raise VMError("the machine was not prepared")
        return self.machine

    def _take_ssh(self, machine: Machine) -> None:
        self.ssh_user = machine.ssh.user
        self.ssh_host = machine.ssh.host
        self.ssh_port = machine.ssh.port
        self.ssh_known_host_key = machine.ssh.known_host_key


__all__ = ["Falk", "FalkError", "FalkSocket", "FalkVM", "SSHTimeoutError", "VMError", "VMStatus", "connect"]
