"""The API's answers as typed, immutable values (the wire's snake_case names are kept)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class Capacity:
    machines: int
    max_machines: int
    ports_in_use: int
    ports_total: int


@dataclass(frozen=True)
class Info:
    """``GET /v1/info``: what the daemon is and how full it is."""

    name: str
    version: str
    api_version: str
    backends: tuple[str, ...]
    capacity: Capacity

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Info:
        c = data["capacity"]
        return cls(
            name=data["name"],
            version=data["version"],
            api_version=data["api_version"],
            backends=tuple(data["backends"]),
            capacity=Capacity(c["machines"], c["max_machines"], c["ports_in_use"], c["ports_total"]),
        )


@dataclass(frozen=True)
class Template:
    """A configured machine kind. ``id`` is the config section, ``name`` what a job asks for."""

    id: str
    name: str
    type: str
    ssh_user: str
    ssh_host: str
    """The literal address its machines answer SSH on (the config's ``ssh_host`` resolved once by the daemon)."""
    manage_supported: bool
    host_key_source: str
    """Where its machines' host key comes from: ``config``, ``machine`` (made for each machine at create, podman),
    ``image`` (read out of the image) or ``observed``."""
    host_key_verified: bool
    """True when readiness checks the key (``config``, ``machine`` or ``image``)."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Template:
        return cls(
            id=data["id"],
            name=data["name"],
            type=data["type"],
            ssh_user=data["ssh_user"],
            ssh_host=data["ssh_host"],
            manage_supported=data["manage_supported"],
            host_key_source=data["host_key_source"],
            host_key_verified=data["host_key_verified"],
        )


@dataclass(frozen=True)
class SshAccess:
    """How to log in to a machine. ``verified`` is true when the key is pinned and readiness checked it."""

    user: str
    host: str
    port: int
    known_host_key: str | None
    fingerprint: str | None
    verified: bool
    host_key_source: str
    known_hosts_line: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SshAccess:
        return cls(
            user=data["user"],
            host=data["host"],
            port=data["port"],
            known_host_key=data.get("known_host_key"),
            fingerprint=data.get("fingerprint"),
            verified=data["known_host_key_verified"],
            host_key_source=data["host_key_source"],
            known_hosts_line=data.get("known_hosts_line"),
        )

    @property
    def destination(self) -> str:
        """``user@host`` for ssh and scp."""
        return f"{self.user}@{self.host}"


@dataclass(frozen=True)
class Snapshot:
    name: str
    created_at: datetime
    size_bytes: int | None
    includes_memory: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(data["name"], _time(data["created_at"]), data.get("size_bytes"), data["includes_memory"])


@dataclass(frozen=True)
class CommitResult:
    """A management commit: the template's new current image ``version``."""

    machine_id: str
    template: str
    version: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommitResult:
        return cls(data["machine_id"], data["template"], data["version"])


@dataclass(frozen=True)
class Event:
    """One server-sent event of ``GET /v1/events``; ``id`` is what ``Last-Event-ID`` resumes after."""

    id: int
    time: datetime
    type: str
    machine_id: str
    template: str
    owner_uid: int
    state: str | None
    detail: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        return cls(
            id=data["id"],
            time=_time(data["time"]),
            type=data["type"],
            machine_id=data["machine_id"],
            template=data["template"],
            owner_uid=data["owner_uid"],
            state=data.get("state"),
            detail=data.get("detail"),
        )
