"""The webhook sender's slots (notifications.sender.FairSlots): shared between organizations
so that one whose endpoint never answers cannot hold every sender. Each scenario checks on the
event loop, before asyncio.run cancels what still waits."""

import asyncio

from notifications.sender import FairSlots


async def _settle():
    for _ in range(3):
        await asyncio.sleep(0)


def _acquiring(slots, owner, count=1) -> list[asyncio.Future]:
    return [asyncio.ensure_future(slots.acquire(owner)) for _ in range(count)]


def test_alone_an_organization_holds_every_slot_but_one():
    async def scenario():
        slots = FairSlots(4)
        tasks = _acquiring(slots, "a", 5)
        await _settle()
        assert [task.done() for task in tasks] == [True, True, True, False, False]
        assert (slots.free, slots.in_flight["a"]) == (1, 3)

    asyncio.run(scenario())


def test_the_slot_left_goes_to_another_organization_at_once():
    async def scenario():
        slots = FairSlots(4)
        held = _acquiring(slots, "a", 5)
        await _settle()
        (other,) = _acquiring(slots, "b")
        await _settle()
        assert other.done()
        assert sum(task.done() for task in held) == 3
        assert (slots.free, slots.in_flight["a"], slots.in_flight["b"]) == (0, 3, 1)

    asyncio.run(scenario())


def test_a_freed_slot_goes_to_the_waiting_organization_with_fewest_in_flight():
    async def scenario():
        slots = FairSlots(3)
        _acquiring(slots, "a", 2)
        _acquiring(slots, "b")
        await _settle()
        # Both wait: a (2 in flight, waiting first) and c (none in flight).
        (a_waiting,) = _acquiring(slots, "a")
        (c_waiting,) = _acquiring(slots, "c")
        await _settle()
        assert not a_waiting.done() and not c_waiting.done()
        slots.release("b")
        await _settle()
        assert c_waiting.done() and not a_waiting.done()
        assert dict(slots.in_flight) == {"a": 2, "c": 1}

    asyncio.run(scenario())


def test_a_cancelled_wait_gives_up_its_place_and_one_slot_serves_one_request():
    async def scenario():
        slots = FairSlots(1)
        await slots.acquire("a")
        (gone,) = _acquiring(slots, "b")
        (kept,) = _acquiring(slots, "c")
        await _settle()
        gone.cancel()
        await _settle()
        slots.release("a")
        await _settle()
        assert gone.cancelled() and kept.done() and not kept.cancelled()
        assert (slots.free, dict(slots.in_flight), slots.waiting) == (0, {"c": 1}, {})

    asyncio.run(scenario())
