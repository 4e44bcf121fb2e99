"""Errors raised by the client: one root, :class:`FalkError`.

Every problem+json answer of the daemon becomes a :class:`FalkProblem` (or one of its subclasses, chosen
by the problem's ``type``); a socket nobody answers on becomes :class:`FalkUnavailable`.
"""

from __future__ import annotations

from typing import Any, Mapping

PROBLEM_TYPE_PREFIX = "urn:falk:problem:"


class FalkError(Exception):
    """Root of every error this package raises on purpose."""


class FalkUnavailable(FalkError):
    """No falkd answers on the socket (missing file, refused, or the connection dropped)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"no falkd answers on {path}: {reason}")
        self.path = path
        self.reason = reason


class UnverifiedHostKey(FalkError):
    """The machine's host key is only what its SSH server showed, not a pinned key; pass ``allow_unverified=True`` to use it anyway."""


class FalkProblem(FalkError):
    """An RFC 9457 problem answer: ``status``, ``type`` (``urn:falk:problem:<code>``), ``title``, ``detail``, and the rest in ``extensions``."""

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str | None,
        *,
        instance: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.instance = instance
        self.extensions: dict[str, Any] = dict(extensions or {})
        self.retry_after = retry_after

    @property
    def code(self) -> str:
        """The problem's code, e.g. ``machine-not-found`` (the ``type`` without its ``urn:falk:problem:`` prefix)."""
        return self.type.removeprefix(PROBLEM_TYPE_PREFIX)


class FalkBadRequest(FalkProblem):
    """400 (or 413): the request was malformed; ``extensions['field']`` names the field where the daemon says."""


class FalkForbidden(FalkProblem):
    """403: this user may not use the daemon, or is not an admin."""


class FalkNotFound(FalkProblem):
    """404: no such template, machine or snapshot."""


class FalkConflict(FalkProblem):
    """409: the machine is in the wrong state (``extensions['state']``), or a management machine is already open."""

    @property
    def state(self) -> str | None:
        value = self.extensions.get("state")
        return value if isinstance(value, str) else None


class FalkBackendFailed(FalkProblem):
    """502: the machine or its backend failed (e.g. ``host-key-mismatch``)."""


class FalkCapacity(FalkProblem):
    """503 ``capacity-exhausted``: no machine or port is free now; try again after ``retry_after`` seconds."""


class FalkBackendUnavailable(FalkProblem):
    """503 ``backend-unavailable``: the template's backend (e.g. podman's API service) does not answer."""


class FalkTimeout(FalkProblem):
    """504: a wait (boot with ``wait=ssh``, wait for stopped) ran out; ``detail`` carries the last probe error."""


_BY_CODE: dict[str, type[FalkProblem]] = {
    "capacity-exhausted": FalkCapacity,
    "backend-unavailable": FalkBackendUnavailable,
}

_BY_STATUS: dict[int, type[FalkProblem]] = {
    400: FalkBadRequest,
    403: FalkForbidden,
    404: FalkNotFound,
    409: FalkConflict,
    413: FalkBadRequest,
    502: FalkBackendFailed,
    504: FalkTimeout,
}


def problem_class(status: int, type: str) -> type[FalkProblem]:
    """The exception class for a problem answer."""
    by_code = _BY_CODE.get(type.removeprefix(PROBLEM_TYPE_PREFIX))
    return by_code if by_code is not None else _BY_STATUS.get(status, FalkProblem)
