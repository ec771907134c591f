"""Counter against a real ZooKeeper: kazoo's encoding (kazoo and aiocoord count on the same node),
exact counts under contention, and lost write replies that are settled, never counted twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from aiocoord import (
    Client,
    ConnectionLoss,
    Counter,
    CounterChange,
    CounterOutcomeUnknown,
    InvalidCounterValue,
    ZnodeStat,
)
from aiocoord.recipes.counter import LostWrite, lost_write_outcome
from aiocoord.testing import TcpProxy, ZooKeeperServer
from tests.helpers import eventually, eventually_async, kazoo_client
from tests.transport.test_protected_create import through_proxy


def stat(version: int, czxid: int = 7) -> ZnodeStat:
    return ZnodeStat(czxid, 0, 0, 0, version, 0, 0, 0, 0, 0, 0)


# -- the pure decision ---------------------------------------------------------------------
def test_what_a_read_after_a_lost_write_proves() -> None:
    at = stat(4)
    # untouched: not applied
    assert lost_write_outcome(at, b"6", stat(4), b"5") is LostWrite.NOT_APPLIED
    # the next version holds other data: that write was another's, ours was refused
    assert lost_write_outcome(at, b"6", stat(5), b"7") is LostWrite.NOT_APPLIED
    # our data at the next version: ours, or another writer's same value
    assert lost_write_outcome(at, b"6", stat(5), b"6") is LostWrite.UNKNOWN
    # later versions, or the node deleted or re-created: nothing can be told
    assert lost_write_outcome(at, b"6", stat(6), b"7") is LostWrite.UNKNOWN
    assert lost_write_outcome(at, b"6", None, b"") is LostWrite.UNKNOWN
    assert lost_write_outcome(at, b"6", stat(4, czxid=9), b"5") is LostWrite.UNKNOWN


# -- values and encoding -------------------------------------------------------------------
async def test_int_and_float_counters_in_kazoos_encoding(zk: Client) -> None:
    counter = Counter(zk, "/c/int")
    assert await counter.value() == 0 and (await zk.get("/c/int"))[0] == b""
    assert await counter.add(2) == CounterChange(0, 2, 1)
    change = await counter.subtract(5)
    assert (change.pre_value, change.post_value) == (2, -3)
    assert (await zk.get("/c/int"))[0] == b"-3" and await counter.value() == -3
    floats = Counter(zk, "/c/float", 1.5)
    assert await floats.value() == 1.5
    assert (await floats.add(1.0)).post_value == 2.5
    assert (await zk.get("/c/float"))[0] == b"2.5"
    with pytest.raises(TypeError):
        await counter.add(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await floats.add(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await counter.add(True)
    with pytest.raises(ValueError, match="finite"):
        await floats.add(float("nan"))
    await zk.set("/c/int", b"not a number")
    with pytest.raises(InvalidCounterValue, match="not a number"):
        await counter.value()


async def test_concurrent_increments_count_exactly(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    workers, each = 10, 15
    changes: list[CounterChange[int]] = []
    async with AsyncExitStack() as stack:
        cs = [
            await stack.enter_async_context(Client(zk_server.hosts, namespace=namespace))
            for _ in range(workers)
        ]

        async def incrementer(client: Client) -> None:
            counter = Counter(client, "/hits")
            for _ in range(each):
                changes.append(await counter.add(1))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for c in cs:
                    tg.start_soon(incrementer, c)
    assert await Counter(zk, "/hits").value() == workers * each
    # every change applied once, on the value the one before it left
    assert sorted(c.post_value for c in changes) == list(range(1, workers * each + 1))
    assert all(c.post_value == c.pre_value + 1 for c in changes)


# -- kazoo interop -------------------------------------------------------------------------


async def test_kazoo_and_aiocoord_count_on_one_node(zk: Client, zk_server: ZooKeeperServer) -> None:
    async with kazoo_client(zk_server, zk) as kazoo:
        theirs = kazoo.Counter("/shared")
        ours = Counter(zk, "/shared")

        def kazoo_add(n: int) -> None:
            theirs.__add__(n)

        await anyio.to_thread.run_sync(kazoo_add, 5)
        assert await ours.value() == 5
        assert (await ours.add(3)).post_value == 8
        assert await anyio.to_thread.run_sync(lambda: theirs.value) == 8
        # interleaved under contention: nothing lost either way
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, lambda: [kazoo_add(1) for _ in range(20)])
            for _ in range(20):
                await ours.add(1)
        assert await ours.value() == 48
        theirs_f = kazoo.Counter("/shared-float", default=0.5)
        await anyio.to_thread.run_sync(lambda: theirs_f.__add__(2.25))
        ours_f = Counter(zk, "/shared-float", 0.5)
        assert (await ours_f.subtract(1.0)).post_value == 1.75
        assert await anyio.to_thread.run_sync(lambda: theirs_f.value) == 1.75


# -- lost replies --------------------------------------------------------------------------
class FaultAfterRead(Counter[int]):
    """A counter that runs ``fault`` once, after the read of its next change: so the fault
    meets the versioned write, not the read (a read is simply sent again)."""

    fault: Callable[[], None] | None = None

    async def _read(self) -> tuple[int, ZnodeStat]:
        got = await super()._read()
        fault, self.fault = self.fault, None
        if fault is not None:
            fault()
        return got


@asynccontextmanager
async def counter_at_5(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> AsyncIterator[tuple[TcpProxy, FaultAfterRead]]:
    await Counter(zk, "/n").add(5)
    async with through_proxy(zk_server, namespace) as (proxy, client):
        counter = FaultAfterRead(client, "/n")
        assert await counter.value() == 5
        yield proxy, counter


async def value_is(zk: Client, expected: int) -> bool:
    return (await zk.get("/n"))[0] == str(expected).encode()


async def test_an_increment_whose_reply_is_lost_is_never_counted_twice(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with counter_at_5(zk_server, namespace, zk) as (proxy, counter):
        counter.fault = proxy.stall_replies
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                errors: list[BaseException] = []

                async def add() -> None:
                    try:
                        await counter.add(1)
                    except CounterOutcomeUnknown as exc:
                        errors.append(exc)

                tg.start_soon(add)
                await eventually_async(lambda: value_is(zk, 6), 10)  # applied, reply held
                proxy.cut()
                proxy.resume()
        (error,) = errors
        assert isinstance(error, CounterOutcomeUnknown)
        assert isinstance(error.__cause__, ConnectionLoss)
        assert (error.pre_value, error.post_value, error.seen) == (5, 6, 6)
        assert await counter.value() == 6  # once, not twice
        assert (await counter.add(1)).post_value == 7  # and counting goes on
    assert await value_is(zk, 7)


async def test_an_increment_whose_request_is_lost_is_made_again(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with counter_at_5(zk_server, namespace, zk) as (proxy, counter):
        counter.fault = proxy.stall  # the write never reaches the server
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                changes: list[CounterChange[int]] = []

                async def add() -> None:
                    changes.append(await counter.add(1))

                tg.start_soon(add)
                await eventually(lambda: proxy.held_requests > 0, 10)
                assert await value_is(zk, 5)
                proxy.cut()
                proxy.resume()
        assert [(c.pre_value, c.post_value) for c in changes] == [(5, 6)]
    assert await value_is(zk, 6)
