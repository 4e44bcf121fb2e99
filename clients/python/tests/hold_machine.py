"""A CI job that takes a machine and holds it: prints ``<id> <port>`` once the machine is ready, then waits forever."""

from __future__ import annotations

import asyncio
import sys

from falk_client import FalkClient


async def main(socket_path: str, template: str, lease_seconds: int) -> None:
    async with FalkClient(socket_path) as client:
        async with client.machine(template, lease_seconds=lease_seconds) as m:
            print(m.id, m.ssh.port, flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
