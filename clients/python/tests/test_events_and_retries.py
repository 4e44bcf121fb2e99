"""The event stream resumed after a dropped connection, and a create retried after one: through a proxy that breaks connections."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from falk_client import Event, FalkClient, FalkUnavailable, Machine

from .support import FaultyProxy, wait_until


class Collector:
    """Collects the events of one subscription in a task of its own."""

    def __init__(self, events: AsyncIterator[Event]) -> None:
        self.events: list[Event] = []
        self._source = events
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for e in self._source:
            self.events.append(e)

    def seen(self, machine_id: str, type: str) -> bool:
        return any(e.machine_id == machine_id and e.type == type for e in self.events)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_the_event_stream_resumes_after_a_dropped_connection_without_losing_or_repeating_events(client: FalkClient, proxy: FaultyProxy) -> None:
    async with FalkClient(proxy.path) as through_proxy:
        reference = Collector(client.events())
        resumed = Collector(through_proxy.events())
        # A stream without Last-Event-ID starts at the next event: only once both subscribers have seen one is
        # "the first machine" an event both can see (a fixed wait would race the subscriptions).
        first = await _first_machine_both_see(client, reference, resumed)

        proxy.refusing = True
        connections_at_cut = proxy.connections
        proxy.cut()
        second = await client.create("sshd", lease_seconds=60)
        await second.boot()
        await second.delete()
        await first.delete()
        await wait_until(lambda: _saw(reference, first.id, "destroyed"), 20, "the reference seeing the first machine go")
        assert not resumed.seen(second.id, "created")  # the proxied stream really was down meanwhile
        # The client waits the stream's retry delay before it tries again; machines now come and go faster than that.
        await wait_until(lambda: _refused_since(proxy, connections_at_cut), 20, "the client to try again and be refused")
        proxy.refusing = False

        third = await client.create("sshd", lease_seconds=60)
        await wait_until(lambda: _both_saw(reference, resumed, third.id, "created"), 20, "both subscribers seeing the third machine")
        await third.delete()
        await reference.stop()
        await resumed.stop()

    start = next(i for i, e in enumerate(reference.events) if e.machine_id == first.id and e.type == "created")
    end = next(i for i, e in enumerate(reference.events) if e.machine_id == third.id and e.type == "created")
    expected = [e.id for e in reference.events[start : end + 1]]
    got = [e.id for e in resumed.events if expected[0] <= e.id <= expected[-1]]
    assert got == expected
    assert {"created", "booting", "ready", "destroyed"} <= {e.type for e in resumed.events if e.machine_id == second.id}
    assert proxy.connections >= 3  # the first stream, at least one refused try, the resumed stream


async def test_events_start_after_the_given_last_event_id(client: FalkClient) -> None:
    m = await client.create("sshd", lease_seconds=60)
    await m.delete()
    history = Collector(client.events(last_event_id=0))
    await wait_until(lambda: _saw(history, m.id, "destroyed"), 10, "the history reaching the deleted machine")
    created = next(e for e in history.events if e.machine_id == m.id and e.type == "created")
    await history.stop()

    after = Collector(client.events(last_event_id=created.id))
    await wait_until(lambda: _saw(after, m.id, "destroyed"), 10, "the resumed history reaching the deleted machine")
    await after.stop()

    assert after.events[0].id == created.id + 1
    assert [e.id for e in after.events] == sorted({e.id for e in after.events})


async def test_a_create_whose_answer_was_lost_is_retried_with_the_same_key_and_gets_the_same_machine(client: FalkClient, proxy: FaultyProxy) -> None:
    async with FalkClient(proxy.path) as through_proxy:
        before = {m.id for m in await client.machines()}
        proxy.drop_next_answer = True
        session = through_proxy.machine("sshd", lease_seconds=60, labels={"job": "retry"})

        async with session as m:
            assert not proxy.drop_next_answer  # the first create's answer was dropped
            made = [x for x in await client.machines() if x.id not in before]
            assert [x.id for x in made] == [m.id]
            machine_id = m.id

    assert machine_id not in {x.id for x in await client.machines()}


async def test_the_same_idempotency_key_returns_the_same_machine(client: FalkClient) -> None:
    first = await client.create("sshd", lease_seconds=60, idempotency_key="py-job-7")
    again = await client.create("sshd", lease_seconds=60, idempotency_key="py-job-7")
    other = await client.create("sshd", lease_seconds=60, idempotency_key="py-job-8")
    try:
        assert again.id == first.id
        assert other.id != first.id
    finally:
        await first.delete()
        await other.delete()


async def test_a_create_that_never_reaches_the_daemon_fails_with_falk_unavailable_after_its_attempts(proxy: FaultyProxy) -> None:
    proxy.refusing = True
    async with FalkClient(proxy.path) as through_proxy:
        try:
            async with through_proxy.machine("sshd", create_attempts=2):
                raise AssertionError("no machine can be made through a refusing proxy")
        except FalkUnavailable as e:
            assert str(proxy.path) in str(e)
    assert proxy.connections >= 2


async def _both_saw(a: Collector, b: Collector, machine_id: str, type: str) -> bool | None:
    return True if a.seen(machine_id, type) and b.seen(machine_id, type) else None


async def _refused_since(proxy: FaultyProxy, connections: int) -> bool | None:
    return True if proxy.connections > connections else None


async def _saw(c: Collector, machine_id: str, type: str) -> bool | None:
    return True if c.seen(machine_id, type) else None


async def _first_machine_both_see(client: FalkClient, reference: Collector, resumed: Collector) -> Machine:
    for _ in range(20):
        machine = await client.create("sshd", lease_seconds=60)
        try:
            await wait_until(lambda: _both_saw(reference, resumed, machine.id, "created"), 2, "both subscribers seeing a machine")
            return machine
        except TimeoutError:
            await machine.delete()
    raise TimeoutError("the two event subscriptions never both saw a created machine")
