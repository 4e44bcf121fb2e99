"""
asyncio client for Falk's REST API over its Unix socket.

    async with FalkClient.from_url("unix:///run/falk/falk.sock") as falk:
        async with falk.machine("debian", lease_seconds=300) as m:
            ...  # m.ssh, m.known_hosts_file(), m.ssh_command(...)
"""

from ._client import DEFAULT_SOCKET, FalkClient, Machine, MachineSession, Snapshots
from .errors import (
    FalkBackendFailed,
    FalkBackendUnavailable,
    FalkBadRequest,
    FalkCapacity,
    FalkConflict,
    FalkError,
    FalkForbidden,
    FalkNotFound,
    FalkProblem,
    FalkTimeout,
    FalkUnavailable,
    UnverifiedHostKey,
)
from .models import Capacity, CommitResult, Event, Info, Snapshot, SshAccess, Template

__all__ = [
    "DEFAULT_SOCKET",
    "Capacity",
    "CommitResult",
    "Event",
    "FalkBackendFailed",
    "FalkBackendUnavailable",
    "FalkBadRequest",
    "FalkCapacity",
    "FalkClient",
    "FalkConflict",
    "FalkError",
    "FalkForbidden",
    "FalkNotFound",
    "FalkProblem",
    "FalkTimeout",
    "FalkUnavailable",
    "Info",
    "Machine",
    "MachineSession",
    "Snapshot",
    "Snapshots",
    "SshAccess",
    "Template",
    "UnverifiedHostKey",
]
