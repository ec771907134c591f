"""The recipes' shared primitives, without ZooKeeper: ``Latest`` (a latest-wins value)."""

from __future__ import annotations

import anyio
import pytest

from aiocoord.recipes._session import Latest


async def test_wait_newer_returns_at_once_when_the_value_differs_from_the_seen_one() -> None:
    latest = Latest(1)
    with anyio.fail_after(1):
        assert await latest.wait_newer(0) == 1


async def test_every_consumer_waits_for_a_publish_and_wakes_with_the_newest() -> None:
    latest = Latest(0)
    got: list[int] = []

    async def consume() -> None:
        got.append(await latest.wait_newer(0))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert got == []  # every task is blocked: the consumers wait
            latest.publish(1)
            latest.publish(2)  # a burst: each consumer wakes once, with the last value
    assert got == [2, 2, 2]
    assert latest.value == 2


async def test_a_burst_of_publishes_wakes_a_consumer_once_with_the_last() -> None:
    latest = Latest(0)
    seen: list[int] = []

    async def consume() -> None:
        value = 0
        while value != 1000:
            value = await latest.wait_newer(value)
            seen.append(value)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            for n in range(1, 1001):
                latest.publish(n)  # the consumer runs only between bursts of 100
                if n % 100 == 0:
                    await anyio.wait_all_tasks_blocked()
    assert seen == list(range(100, 1001, 100))  # never a backlog: the newest after each burst


async def test_a_publish_of_the_seen_value_wakes_nobody() -> None:
    latest = Latest("a")
    got: list[str] = []

    async def consume() -> None:
        got.append(await latest.wait_newer("a"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            latest.publish("a")
            await anyio.wait_all_tasks_blocked()
            assert got == []  # woken, it found nothing new and waits again
            latest.publish("b")
    assert got == ["b"]


async def test_close_ends_the_waits_newer_value_or_not() -> None:
    latest = Latest(0)
    ended: list[str] = []

    async def consume() -> None:
        with pytest.raises(anyio.EndOfStream):
            await latest.wait_newer(0)
        ended.append("waiting")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            latest.close()
    assert ended == ["waiting"]
    latest.publish(1)  # after close: nobody is interested any more
    with anyio.fail_after(1), pytest.raises(anyio.EndOfStream):
        await latest.wait_newer(0)
