"""A reader of ``text/event-stream`` (the WHATWG server-sent events format) over aiohttp's body stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

import aiohttp


@dataclass(frozen=True)
class ServerSentEvent:
    id: str | None
    event: str
    data: str
    retry_ms: int | None


async def read_events(content: aiohttp.StreamReader) -> AsyncIterator[ServerSentEvent]:
    """Yields each complete event; an event cut off by the end of the stream is dropped, as the format says."""
    event_id: str | None = None
    event_type = ""
    data: list[str] = []
    retry_ms: int | None = None
    while True:
        raw = await content.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not raw.endswith(b"\n"):
            return  # cut off in the middle of a line
        if line == "":
            if data:
                yield ServerSentEvent(event_id, event_type or "message", "\n".join(data), retry_ms)
            event_type, data, retry_ms = "", [], None
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id" and "\0" not in value:
            event_id = value
        elif field == "retry" and value.isdigit():
            retry_ms = int(value)
