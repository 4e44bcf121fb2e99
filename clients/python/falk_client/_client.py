"""The client of Falk's REST API (v1) over its Unix socket, on aiohttp's ``UnixConnector``."""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import math
import os
import shlex
import tempfile
import types
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Literal, Mapping, Sequence, TypeVar, overload
from urllib.parse import quote, urlsplit

import aiohttp

from . import _sse
from .errors import FalkError, FalkNotFound, FalkProblem, FalkUnavailable, UnverifiedHostKey, problem_class
from .models import CommitResult, Event, Info, Snapshot, SshAccess, Template

DEFAULT_SOCKET = "/run/falk/falk.sock"

log = logging.getLogger("falk_client")

_T = TypeVar("_T")


def _seconds(value: float | None) -> int | None:
    """The API counts whole seconds; a fraction is rounded up so a wait is never shorter than asked."""
    return None if value is None else max(0, math.ceil(value))


class FalkClient:
    """A connection pool to one falkd. Use it as ``async with FalkClient(path) as client:`` (or call :meth:`close`)."""

    def __init__(self, socket_path: str | os.PathLike[str] = DEFAULT_SOCKET, *, user: str | None = None) -> None:
        self.socket_path = os.fspath(socket_path)
        # The original's unix://user@/path names a user; the daemon takes the caller from the socket's peer
        # credentials, so the name is only kept for display.
        self.user = user
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_url(cls, url: str) -> FalkClient:
        """``unix:///run/falk/falk.sock``, the original's ``unix://user@/run/kevin/falk``, or a plain path."""
        if "://" not in url:
            return cls(url)
        parts = urlsplit(url)
        if parts.scheme != "unix" or not parts.path:
            raise ValueError(f"not a falk socket URL (unix:///PATH or unix://USER@/PATH): {url!r}")
        host = parts.netloc
        user, _, rest = host.rpartition("@")
        if rest:
            raise ValueError(f"a falk socket URL has no host, only an optional user (unix://USER@/PATH): {url!r}")
        return cls(parts.path, user=user or None)

    def __repr__(self) -> str:
        return f"FalkClient({self.socket_path!r})"

    async def __aenter__(self) -> FalkClient:
        self._http()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url="http://falk",
                connector=aiohttp.UnixConnector(path=self.socket_path),
                # Waits (boot with wait=ssh, wait for stopped) are bounded by the daemon's own timeouts.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            )
        return self._session

    # ----- plumbing -----

    @asynccontextmanager
    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            response = await self._http().request(method, path, json=body, params=params, headers=headers)
        except aiohttp.ClientConnectorError as e:
            raise FalkUnavailable(self.socket_path, str(e.os_error.strerror or e.os_error)) from e
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise FalkUnavailable(self.socket_path, f"the connection failed ({e or type(e).__name__})") from e
        try:
            if response.status >= 400:
                raise await self._problem(response)
            yield response
        finally:
            response.release()

    async def _problem(self, response: aiohttp.ClientResponse) -> FalkProblem:
        data: dict[str, Any] = {}
        try:
            parsed = json.loads(await response.text())
            if isinstance(parsed, dict):
                data = parsed
        except (ValueError, aiohttp.ClientError):
            pass
        retry_after: float | None = None
        header = response.headers.get("Retry-After")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        status = int(data.get("status") or response.status)
        type_ = str(data.get("type") or "about:blank")
        known = {"status", "type", "title", "detail", "instance"}
        return problem_class(status, type_)(
            status,
            type_,
            str(data.get("title") or response.reason or "HTTP error"),
            data.get("detail"),
            instance=data.get("instance"),
            extensions={k: v for k, v in data.items() if k not in known},
            retry_after=retry_after,
        )

    async def _json(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        async with self._call(method, path, body=body, params=params, headers=headers) as response:
            if response.status == 204:
                return None
            try:
                return await response.json()
            except aiohttp.ClientError as e:
                raise FalkUnavailable(self.socket_path, f"the answer was cut off ({e or type(e).__name__})") from e

    # ----- daemon -----

    async def info(self) -> Info:
        return Info.from_json(await self._json("GET", "/v1/info"))

    async def templates(self) -> list[Template]:
        return [Template.from_json(t) for t in await self._json("GET", "/v1/templates")]

    async def template(self, name: str) -> Template:
        return Template.from_json(await self._json("GET", f"/v1/templates/{quote(name, safe='')}"))

    # ----- machines -----

    async def machines(self) -> list[Machine]:
        """The caller's machines (every machine for admins)."""
        return [Machine(self, m) for m in await self._json("GET", "/v1/machines")]

    async def get(self, id: str) -> Machine:
        return Machine(self, await self._json("GET", _machine_path(id)))

    async def create(
        self,
        template: str,
        *,
        lease_seconds: int | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        manage: bool = False,
    ) -> Machine:
        """Allocates a port and prepares a machine (state ``prepared``, or ``running`` and SSH-verified when the template has a warm pool); a retry with the same ``idempotency_key`` gets the same machine."""
        body: dict[str, Any] = {"template": template, "manage": manage}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        if labels:
            body["labels"] = dict(labels)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return Machine(self, await self._json("POST", "/v1/machines", body=body, headers=headers))

    async def delete(self, id: str) -> None:
        """Stops the machine hard and cleans it up; deleting a machine that is gone is not an error."""
        await self._json("DELETE", _machine_path(id))

    def machine(
        self,
        template: str,
        *,
        lease_seconds: int | None = None,
        labels: Mapping[str, str] | None = None,
        manage: bool = False,
        wait_ssh: bool = True,
        boot_timeout: float | None = None,
        create_attempts: int = 5,
    ) -> MachineSession:
        """
        ``async with client.machine("debian") as m:`` creates a machine (with an idempotency key, retried on
        connection errors), boots it until SSH shows the expected host key, renews its lease in the background at a
        third of its length, and deletes it on exit: normally, on an exception and on cancellation.
        """
        return MachineSession(
            self,
            template,
            lease_seconds=lease_seconds,
            labels=labels,
            manage=manage,
            wait_ssh=wait_ssh,
            boot_timeout=boot_timeout,
            create_attempts=create_attempts,
        )

    # ----- events -----

    async def events(self, last_event_id: int | None = None, *, reconnect_timeout: float = 30.0) -> AsyncGenerator[Event, None]:
        """
        The daemon's server-sent events, from after ``last_event_id`` (or from now). A dropped connection is
        resumed with ``Last-Event-ID``, so no event is lost or repeated (within the daemon's last 1024 events);
        :class:`FalkUnavailable` is raised once the daemon has not answered for ``reconnect_timeout`` seconds.
        """
        last = last_event_id
        retry_delay = 0.2
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self._call("GET", "/v1/events", headers=headers) as response:
                    failing_since = None
                    async for item in _sse.read_events(response.content):
                        if item.retry_ms is not None:
                            retry_delay = item.retry_ms / 1000
                        event = Event.from_json(json.loads(item.data))
                        if last is not None and event.id <= last:
                            continue
                        last = event.id
                        yield event
                reason = "the daemon ended the stream"
            except FalkUnavailable as e:
                reason = e.reason
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
                reason = f"the connection dropped ({e or type(e).__name__})"
            now = loop.time()
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since > reconnect_timeout:
                raise FalkUnavailable(self.socket_path, f"{reason}; no answer for {reconnect_timeout:g} s")
            log.debug("event stream: %s; resuming after event %s", reason, last)
            await asyncio.sleep(retry_delay)

    # ----- per machine (used by Machine) -----

    async def _console_text(self, id: str) -> str:
        async with self._call("GET", _machine_path(id, "console")) as response:
            return await response.text()

    async def _console_follow(self, id: str) -> AsyncGenerator[str, None]:
        async with self._call("GET", _machine_path(id, "console"), params={"follow": "true"}) as response:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            async for chunk in response.content.iter_any():
                text = decoder.decode(chunk)
                if text:
                    yield text
            rest = decoder.decode(b"", final=True)
            if rest:
                yield rest


def _machine_path(id: str, *rest: str) -> str:
    return "/".join(["/v1/machines", quote(id, safe=""), *rest])


class Machine:
    """
    A machine as last seen (``refresh()`` reads it again) and the operations on it. Attributes follow the API:
    ``id``, ``template``, ``state``, ``manage``, ``owner_uid``, ``created_at``, ``state_changed_at``,
    ``lease_expires_at``, ``labels``, ``ssh`` (:class:`SshAccess`), ``last_error``.
    """

    id: str
    template: str
    state: str
    manage: bool
    owner_uid: int
    created_at: datetime
    state_changed_at: datetime
    lease_expires_at: datetime
    labels: dict[str, str]
    ssh: SshAccess
    last_error: str | None

    def __init__(self, client: FalkClient, data: Mapping[str, Any]) -> None:
        self.client = client
        self._known_hosts_files: list[Path] = []
        self._update(data)

    def _update(self, data: Mapping[str, Any]) -> Machine:
        self.id = data["id"]
        self.template = data["template"]
        self.state = data["state"]
        self.manage = data["manage"]
        self.owner_uid = data["owner_uid"]
        self.created_at = datetime.fromisoformat(data["created_at"])
        self.state_changed_at = datetime.fromisoformat(data["state_changed_at"])
        self.lease_expires_at = datetime.fromisoformat(data["lease_expires_at"])
        self.labels = dict(data["labels"])
        self.ssh = SshAccess.from_json(data["ssh"])
        self.last_error = data.get("last_error")
        return self

    def __repr__(self) -> str:
        return f"<Machine {self.id} {self.template} {self.state}>"

    @property
    def lease_seconds_left(self) -> float:
        return (self.lease_expires_at - datetime.now(timezone.utc)).total_seconds()

    async def refresh(self) -> Machine:
        return self._update(await self.client._json("GET", _machine_path(self.id)))

    async def boot(self, wait_ssh: bool = True, timeout: float | None = None) -> Machine:
        """Launches the machine; with ``wait_ssh`` returns once SSH presents the expected host key (``FalkTimeout`` after ``timeout`` s)."""
        params = {"wait": "ssh" if wait_ssh else "none"}
        if timeout is not None:
            params["timeout"] = str(_seconds(timeout))
        return self._update(await self.client._json("POST", _machine_path(self.id, "boot"), params=params))

    async def stop(self, timeout: float | None = None) -> Machine:
        """Graceful power-down, forced after ``timeout`` seconds (the daemon's default is 30; 0 forces at once)."""
        body = {"timeout_seconds": _seconds(timeout)} if timeout is not None else None
        return self._update(await self.client._json("POST", _machine_path(self.id, "stop"), body=body))

    async def wait_stopped(self, timeout: float | None = None) -> Machine:
        """Waits for the guest to stop by itself (e.g. after ``poweroff`` over SSH)."""
        params = {"condition": "stopped"}
        if timeout is not None:
            params["timeout"] = str(_seconds(timeout))
        return self._update(await self.client._json("POST", _machine_path(self.id, "wait"), params=params))

    async def renew(self, seconds: int) -> Machine:
        """The lease now ends ``seconds`` from now."""
        return self._update(await self.client._json("PUT", _machine_path(self.id, "lease"), body={"seconds": seconds}))

    async def delete(self) -> None:
        """Stops the machine hard and cleans it up (idempotent); removes the known_hosts files made for it."""
        await self.client.delete(self.id)
        self.state = "destroyed"
        self.remove_known_hosts_files()

    async def ssh_access(self) -> SshAccess:
        """Reads ``GET /v1/machines/{id}/ssh`` again."""
        self.ssh = SshAccess.from_json(await self.client._json("GET", _machine_path(self.id, "ssh")))
        return self.ssh

    @overload
    def console(self, follow: Literal[False] = False) -> Awaitable[str]: ...

    @overload
    def console(self, follow: Literal[True]) -> AsyncGenerator[str, None]: ...

    def console(self, follow: bool = False) -> Awaitable[str] | AsyncGenerator[str, None]:
        """``await m.console()``: what the machine printed so far; ``async for text in m.console(follow=True)``: that and more until it stops."""
        return self.client._console_follow(self.id) if follow else self.client._console_text(self.id)

    @property
    def snapshots(self) -> Snapshots:
        return Snapshots(self)

    async def commit(self, timeout: float | None = None) -> CommitResult:
        """Management machines: stops the guest (forced after ``timeout`` s) and publishes its disk as the template's new image."""
        body = {"timeout_seconds": _seconds(timeout)} if timeout is not None else None
        result = CommitResult.from_json(await self.client._json("POST", _machine_path(self.id, "commit"), body=body))
        await self.refresh()
        return result

    def known_hosts_file(self, allow_unverified: bool = False, directory: str | os.PathLike[str] | None = None) -> Path:
        """
        Writes a temporary known_hosts file holding exactly this machine's host key (for ``ssh -o
        UserKnownHostsFile=… -o StrictHostKeyChecking=yes``). A key only observed, not pinned, is refused with
        :class:`UnverifiedHostKey` unless ``allow_unverified``. The file goes with :meth:`delete` or
        :meth:`remove_known_hosts_files`.
        """
        line = self.ssh.known_hosts_line
        if line is None or self.ssh.known_host_key is None:
            raise FalkError(f"machine {self.id} has no host key yet ({self.state}): boot it with wait_ssh=True first")
        if not self.ssh.verified and not allow_unverified:
            raise UnverifiedHostKey(
                f"machine {self.id}'s host key {self.ssh.fingerprint} is only what its SSH server showed "
                f"(source: {self.ssh.host_key_source}); pin it in the template, or pass allow_unverified=True"
            )
        fd, name = tempfile.mkstemp(prefix=f"falk-{self.id}-", suffix=".known_hosts", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(line + "\n")
        path = Path(name)
        self._known_hosts_files.append(path)
        return path

    def remove_known_hosts_files(self) -> None:
        while self._known_hosts_files:
            self._known_hosts_files.pop().unlink(missing_ok=True)

    def ssh_command(
        self,
        *command: str,
        identity: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        options: Sequence[str] = (),
    ) -> list[str]:
        """
        An ``ssh`` argument list that logs in with the pinned key only (a known_hosts file is written unless given)
        and runs ``command``, an argument list: each argument is quoted for the remote shell, so it arrives as
        given. Pass it to ``asyncio.create_subprocess_exec(*argv)``.
        """
        hosts = os.fspath(known_hosts) if known_hosts is not None else str(self.known_hosts_file())
        argv = ["ssh", "-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
        if identity is not None:
            argv += ["-i", os.fspath(identity), "-o", "IdentitiesOnly=yes"]
        argv += [*options, "-p", str(self.ssh.port), self.ssh.destination]
        if command:
            argv += ["--", shlex.join(command)]
        return argv


class Snapshots:
    """A machine's snapshots: ``await m.snapshots.list()``, ``.create(name)``, ``.restore(name)``, ``.delete(name)``."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine

    async def list(self) -> list[Snapshot]:
        data = await self._machine.client._json("GET", _machine_path(self._machine.id, "snapshots"))
        return [Snapshot.from_json(s) for s in data]

    async def create(self, name: str) -> Snapshot:
        data = await self._machine.client._json("POST", _machine_path(self._machine.id, "snapshots"), body={"name": name})
        return Snapshot.from_json(data)

    async def restore(self, name: str) -> Machine:
        path = _machine_path(self._machine.id, "snapshots", quote(name, safe=""), "restore")
        return self._machine._update(await self._machine.client._json("POST", path))

    async def delete(self, name: str) -> None:
        """Deletes the snapshot; the machine itself is unchanged."""
        await self._machine.client._json("DELETE", _machine_path(self._machine.id, "snapshots", quote(name, safe="")))


def keep_lease(machine: Machine, seconds: int) -> asyncio.Task[None]:
    """Starts renewing ``machine``'s lease for ``seconds`` at a third of its length, until the task is cancelled or the machine is gone."""
    return asyncio.create_task(_renew(machine, seconds), name=f"falk-renew-{machine.id}")


async def _renew(machine: Machine, seconds: int) -> None:
    interval = seconds / 3
    delay = interval
    while True:
        await asyncio.sleep(delay)
        try:
            await machine.renew(seconds)
            delay = interval
        except FalkNotFound:
            log.warning("machine %s is gone; its lease is no longer renewed", machine.id)
            return
        except FalkError as e:
            # Try again soon: the lease still runs for two thirds of its length.
            log.warning("renewing machine %s's lease: %s", machine.id, e)
            delay = min(interval, 1.0)


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancels ``task`` and waits until it has ended."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def _despite_cancellation(awaitable: Awaitable[_T]) -> _T:
    """Awaits ``awaitable`` to the end even when the calling task is cancelled meanwhile; the cancellation is raised afterwards."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
        except BaseException:
            break
    result = task.result()
    if cancelled:
        raise asyncio.CancelledError()
    return result


class MachineSession:
    """What :meth:`FalkClient.machine` returns: an async context manager around one machine's whole life."""

    def __init__(
        self,
        client: FalkClient,
        template: str,
        *,
        lease_seconds: int | None,
        labels: Mapping[str, str] | None,
        manage: bool,
        wait_ssh: bool,
        boot_timeout: float | None,
        create_attempts: int,
    ) -> None:
        self.client = client
        self.template = template
        self.lease_seconds = lease_seconds
        self.labels = labels
        self.manage = manage
        self.wait_ssh = wait_ssh
        self.boot_timeout = boot_timeout
        self.create_attempts = max(1, create_attempts)
        self.idempotency_key = f"falk-client-{uuid.uuid4()}"
        self.machine: Machine | None = None
        self._create_sent = False
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Machine:
        try:
            machine = self.machine = await self._create()
            lease = self.lease_seconds or max(1, round((machine.lease_expires_at - machine.created_at).total_seconds()))
            self._renewer = keep_lease(machine, lease)
            await machine.boot(wait_ssh=self.wait_ssh, timeout=self.boot_timeout)
            return machine
        except BaseException:
            await self._end(raise_errors=False)
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None) -> None:
        await self._end(raise_errors=exc is None)

    async def _create(self) -> Machine:
        delay = 0.25
        for attempt in range(1, self.create_attempts + 1):
            try:
                self._create_sent = True
                return await self._create_once()
            except FalkProblem:
                self._create_sent = False  # a definite answer: nothing was made
                raise
            except FalkUnavailable as e:
                if attempt == self.create_attempts:
                    raise
                log.warning("creating a %s machine: %s; retrying in %.2g s (attempt %d of %d)", self.template, e, delay, attempt + 1, self.create_attempts)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def _create_once(self) -> Awaitable[Machine]:
        return self.client.create(
            self.template, lease_seconds=self.lease_seconds, labels=self.labels, idempotency_key=self.idempotency_key, manage=self.manage
        )

    async def _end(self, *, raise_errors: bool) -> None:
        await _despite_cancellation(self._end_uncancellable(raise_errors))

    async def _end_uncancellable(self, raise_errors: bool) -> None:
        if self._renewer is not None:
            await stop_task(self._renewer)
            self._renewer = None
        try:
            if self.machine is None and self._create_sent:
                # Cut off while creating: the daemon may have made it. The same key names the same machine.
                self.machine = await self._create_once()
            if self.machine is not None:
                await self.machine.delete()
        except FalkError as e:
            if raise_errors:
                raise
            log.warning("deleting the %s machine %s: %s (its lease will end it)", self.template, self.machine.id if self.machine else "?", e)
        finally:
            if self.machine is not None:
                self.machine.remove_known_hosts_files()
