"""The EventBus port on every bus, for real: memory, Redis Streams and Kafka (Tansu).

What every consumer may rely on (docs/events.md "Delivery"): each group gets every
message, the messages of one key in order; a message is acknowledged only once its
handler returned, so a failing handler gets it again and a consumer stopped mid-message
leaves it to another one of its group; after the last attempt it goes to
``<topic>.dlq`` with the error; a restarted consumer resumes where its group stopped.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from buses import KINDS, bus_url, drop_redis_prefix, require_redis, unique_prefix
from dicomcloud.events import MemoryEventBus, open_event_bus
from dicomcloud.ports import Delivery, EventBus, RetryPolicy, Subscription

pytestmark = pytest.mark.backend

TOPIC = "instance.stored"
#: Generous: a Kafka group (re)join on a loaded 2-core machine takes seconds.
WAIT = 90.0
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_seconds=0.05)
_numbers = itertools.count()


@dataclass
class BusKit:
    """Buses of one kind sharing one prefix (one per "process"; memory: the same)."""

    kind: str
    url: str
    buses: list[EventBus] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)

    def open(self) -> EventBus:
        if self.kind == "memory" and self.buses:
            return self.buses[0]
        bus = open_event_bus(self.url)
        self.buses.append(bus)
        return bus

    async def consume(
        self,
        bus: EventBus,
        group: str,
        handler: Collector,
        topic: str = TOPIC,
        retry: RetryPolicy = FAST_RETRY,
    ) -> Subscription:
        subscription = await bus.consume(topic, group, handler, retry=retry)
        self.subscriptions.append(subscription)
        return subscription


@pytest.fixture(params=KINDS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[BusKit]:
    kind: str = request.param
    prefix = unique_prefix()
    tansu_address = None
    if kind == "redis":
        require_redis()
    if kind == "kafka":
        tansu_address = request.getfixturevalue("tansu")
    made = BusKit(kind, bus_url(kind, prefix, tansu_address))
    try:
        yield made
    finally:
        for subscription in made.subscriptions:
            await subscription.stop()
        for bus in made.buses:
            await bus.close()
        if kind == "redis":
            drop_redis_prefix(prefix)


def group_name(name: str) -> str:
    """Kafka groups are cluster-wide: a name of its own per test."""
    return f"{name}-{next(_numbers)}-{unique_prefix()}"


class Collector:
    """A handler recording what it is given; ``fail`` decides whether to raise."""

    def __init__(self, fail: int = 0, block_on: str | None = None, seconds: float = 0) -> None:
        self.received: list[Delivery] = []
        self.done: list[str] = []
        self._seconds = seconds  # each message takes this long
        self._fail = fail  # raise on each message's first ``fail`` attempts
        self._block_on = block_on  # never return on this payload (a crash mid-message)
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.received.append(delivery)
        self._changed.set()
        if delivery.payload == self._block_on:
            await asyncio.Event().wait()
        if delivery.attempt <= self._fail:
            raise RuntimeError(f"attempt {delivery.attempt} fails")
        if self._seconds:
            await asyncio.sleep(self._seconds)
        # No await between being told and returning: a test that stops the consumer
        # once it was told stops it after the handler returned.
        self.done.append(delivery.payload)

    @property
    def payloads(self) -> list[str]:
        return [d.payload for d in self.received]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()


async def test_published_messages_are_consumed(kit: BusKit) -> None:
    bus = kit.open()
    got = Collector()
    await kit.consume(bus, group_name("g"), got)

    for n in range(3):
        await bus.publish(TOPIC, "tenant/1.2.3", f"message {n}")
    await got.wait_for(3)

    assert got.payloads == ["message 0", "message 1", "message 2"]
    assert {(d.topic, d.key, d.attempt) for d in got.received} == {(TOPIC, "tenant/1.2.3", 1)}
    assert len({d.id for d in got.received}) == 3


async def test_messages_of_one_key_stay_in_order(kit: BusKit) -> None:
    bus = kit.open()
    got = Collector()
    await kit.consume(bus, group_name("g"), got)
    keys = [f"tenant/1.2.{k}" for k in range(4)]

    for n in range(40):
        await bus.publish(TOPIC, keys[n % 4], f"{keys[n % 4]}|{n}")
    await got.wait_for(40)

    for key in keys:
        numbers = [int(d.payload.split("|")[1]) for d in got.received if d.key == key]
        assert numbers == sorted(numbers)
        assert len(numbers) == 10


async def test_a_failing_handler_gets_the_message_again_until_it_succeeds(kit: BusKit) -> None:
    bus = kit.open()
    group = group_name("g")
    got = Collector(fail=2)
    first = await kit.consume(bus, group, got)

    await bus.publish(TOPIC, "t/1", "flaky")
    await got.wait_for(3)
    await first.stop()
    # Acknowledged after the third attempt: the group's next consumer never sees it.
    later = Collector()
    await kit.consume(kit.open(), group, later)
    await bus.publish(TOPIC, "t/1", "after")
    await later.wait_for(1)

    assert [(d.payload, d.attempt) for d in got.received] == [
        ("flaky", 1),
        ("flaky", 2),
        ("flaky", 3),
    ]
    await asyncio.sleep(1.0)
    assert later.payloads == ["after"]


async def test_a_consumer_stopped_mid_message_leaves_it_to_another(kit: BusKit) -> None:
    bus = kit.open()
    group = group_name("g")
    crashing = Collector(block_on="slow")
    first = await kit.consume(bus, group, crashing)

    await bus.publish(TOPIC, "t/1", "slow")
    await crashing.wait_for(1)
    await first.stop()  # handling, not acknowledged: as if the process died
    other = Collector()
    await kit.consume(kit.open(), group, other)
    await other.wait_for(1)

    assert other.payloads[0] == "slow"
    assert other.received[0].id == crashing.received[0].id


async def test_after_the_last_attempt_the_message_goes_to_the_dead_letter_topic(
    kit: BusKit,
) -> None:
    bus = kit.open()
    group = group_name("g")
    dead = Collector()
    await kit.consume(bus, group_name("dlq"), dead, topic=TOPIC + ".dlq")
    always = Collector(fail=99)
    first = await kit.consume(bus, group, always)

    await bus.publish(TOPIC, "tenant/9.9", "poison")
    await dead.wait_for(1)
    await first.stop()
    later = Collector()
    await kit.consume(kit.open(), group, later)
    await bus.publish(TOPIC, "tenant/9.9", "after")
    await later.wait_for(1)

    assert [d.attempt for d in always.received] == [1, 2, 3]
    letter = dead.received[0]
    assert (letter.topic, letter.key, letter.payload) == (TOPIC + ".dlq", "tenant/9.9", "poison")
    assert letter.headers["error"] == "RuntimeError: attempt 3 fails"
    assert letter.headers["group"] == group
    assert letter.headers["attempts"] == "3"
    assert letter.headers["topic"] == TOPIC
    assert letter.headers["id"] == always.received[0].id
    await asyncio.sleep(1.0)
    assert later.payloads == ["after"]  # the poison message was acknowledged


async def test_every_group_gets_every_message(kit: BusKit) -> None:
    bus = kit.open()
    one, two = Collector(), Collector()
    await kit.consume(bus, group_name("one"), one)
    await kit.consume(kit.open(), group_name("two"), two)

    for n in range(5):
        await bus.publish(TOPIC, f"t/{n}", f"m{n}")
    await one.wait_for(5)
    await two.wait_for(5)

    assert sorted(one.payloads) == sorted(two.payloads) == [f"m{n}" for n in range(5)]


async def test_a_restarted_consumer_resumes_without_loss_or_repeat(kit: BusKit) -> None:
    bus = kit.open()
    group = group_name("g")
    before = Collector()
    first = await kit.consume(bus, group, before)
    for n in range(3):
        await bus.publish(TOPIC, "t/1", f"m{n}")
    await before.wait_for(3)
    await first.stop()

    for n in range(3, 6):  # published while no consumer of the group runs
        await bus.publish(TOPIC, "t/1", f"m{n}")
    after = Collector()
    await kit.consume(kit.open(), group, after)
    await after.wait_for(3)

    assert before.payloads == ["m0", "m1", "m2"]
    await asyncio.sleep(1.0)
    assert after.payloads == ["m3", "m4", "m5"]


async def test_a_new_group_reads_what_was_published_before(kit: BusKit) -> None:
    if kit.kind == "memory":
        bus = kit.open()
        assert isinstance(bus, MemoryEventBus)
        await bus.publish(TOPIC, "t/1", "unseen")  # no group yet: memory keeps nothing
        got = Collector()
        await kit.consume(bus, group_name("g"), got)
        await bus.publish(TOPIC, "t/1", "seen")
        await got.wait_for(1)
        await asyncio.sleep(0.2)
        assert got.payloads == ["seen"]
        return
    bus = kit.open()
    await bus.publish(TOPIC, "t/1", "early")
    got = Collector()
    await kit.consume(kit.open(), group_name("g"), got)
    await got.wait_for(1)

    assert got.payloads == ["early"]


@pytest.mark.parametrize("kit", ["redis"], indirect=True)
async def test_a_slow_handler_keeps_its_message_on_redis(kit: BusKit) -> None:
    """Redis hands a message left idle for ``claim_idle_seconds`` (1 s here) to another
    consumer; one that is being handled is kept claimed, however long it takes."""
    bus = kit.open()
    group = group_name("g")
    slow = Collector(seconds=4.0)
    await kit.consume(bus, group, slow)
    other = Collector()
    await kit.consume(kit.open(), group, other)

    await bus.publish(TOPIC, "t/1", "slow")
    async with asyncio.timeout(WAIT):
        while not slow.done and not other.done:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)  # longer than claim_idle_seconds: a takeover would show

    assert [d.payload for d in slow.received + other.received] == ["slow"]
