"""Test helpers: a faulty proxy in front of the daemon's socket, polling, and the process table."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


async def wait_until(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.1) -> T:
    """Polls ``probe`` until it returns something other than None, or fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        await asyncio.sleep(interval)


def processes_of_machine(machine_id: str, port: int | None = None) -> list[int]:
    """
    Pids of live processes of a custom machine: those carrying ``FALK_MACHINE_ID=<machine_id>`` in their
    environment, and (sshd rewrites its environment with its process title) those whose command line holds
    ``-p <port> ``.
    """
    marker = f"FALK_MACHINE_ID={machine_id}".encode()
    port_argument = f"-p {port} ".encode() if port is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue
        if marker in environ.split(b"\0") or (port_argument is not None and port_argument in cmdline):
            found.append(int(entry.name))
    return found


class FaultyProxy:
    """
    A Unix socket that forwards every connection to the daemon's socket, and on request cuts the open connections,
    refuses new ones, or forwards one request but drops its answer (the daemon did the work, the client saw the
    connection break).
    """

    def __init__(self, path: Path, upstream: Path) -> None:
        self.path = path
        self.upstream = upstream
        self.refusing = False
        self.drop_next_answer = False
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refusing:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
        self._writers |= {writer, up_writer}
        down = asyncio.ensure_future(self._pipe(up_reader, writer, answers=True, other=up_writer))
        up = asyncio.ensure_future(self._pipe(reader, up_writer, answers=False, other=writer))
        self._tasks |= {down, up}
        await asyncio.gather(down, up, return_exceptions=True)
        self._tasks -= {down, up}
        self._writers -= {writer, up_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answers: bool, other: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if answers and self.drop_next_answer:
                    self.drop_next_answer = False
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            other.close()

    def cut(self) -> None:
        """Closes every open connection (both sides)."""
        for writer in list(self._writers):
            writer.close()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.path.exists():
            os.unlink(self.path)
