"""SetPartitioner against a real ZooKeeper: kazoo's division and layout (a kazoo partitioner and
an aiocoord one divide the same set, both ways), rebalancing without an item ever held twice (a
history check), kill -9 and SIGSTOP of a member process, cancellation while allocating and a lost
create reply."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from kazoo.client import KazooClient
from kazoo.recipe.partitioner import SetPartitioner as KazooPartitioner

from aiocoord import Allocation, Client, Op, SetPartitioner
from aiocoord.recipes.partitioner import partition
from aiocoord.testing import ZooKeeperServer
from tests.helpers import count_is, eventually, eventually_async, read_line
from tests.transport.test_protected_create import lose_reply, through_proxy

PROCESS = Path(__file__).with_name("partitioner_process.py")
#: the member processes run the tree under test (not an installed copy)
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
ITEMS = ["a", "b", "c", "d"]


# -- the pure division ---------------------------------------------------------------------
def test_the_division_is_kazoos() -> None:
    rng = random.Random(7)
    for _ in range(200):
        items = [f"i{rng.randrange(1000)}" for _ in range(rng.randrange(0, 12))]
        members = [f"m{k}" for k in rng.sample(range(50), rng.randrange(1, 6))]
        shares = [partition(m, members, items) for m in members]
        for m, share in zip(members, shares, strict=True):
            assert share == KazooPartitioner._partitioner(None, m, members, items)  # type: ignore[arg-type]
        assert sorted(i for share in shares for i in share) == sorted(items)


# -- the history check ---------------------------------------------------------------------
class History:
    """Who works on which item, in the order it happened (one event loop: a total order)."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}
        self.overlaps: list[str] = []

    def start(self, member: str, items: tuple[str, ...]) -> None:
        for item in items:
            if item in self.holders:
                self.overlaps.append(f"{item}: {member} while {self.holders[item]} works on it")
            self.holders[item] = member

    def end(self, member: str, items: tuple[str, ...]) -> None:
        for item in items:
            if self.holders.get(item) == member:
                del self.holders[item]


class Member:
    """A member in its own session, working on each allocation until it is revoked, then
    winding down for ``winddown`` seconds (work in flight finishing) before leaving it."""

    def __init__(
        self,
        client: Client,
        name: str,
        history: History,
        *,
        items: list[str] = ITEMS,
        winddown: float = 0.0,
        boundary: float = 0.3,
        on_allocation: Callable[[Allocation], Awaitable[None]] | None = None,
    ) -> None:
        self.client, self.name, self.history, self.winddown = client, name, history, winddown
        self.part = SetPartitioner(client, "/work", items, name, time_boundary=boundary)
        self.current: tuple[str, ...] | None = None
        self.on_allocation = on_allocation
        self.scope = anyio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            async with self.part:
                async for allocation in self.part:
                    with allocation:
                        self.history.start(self.name, allocation.items)
                        self.current = allocation.items
                        try:
                            if self.on_allocation is not None:
                                await self.on_allocation(allocation)
                            await anyio.sleep_forever()
                        finally:
                            self.current = None
                            with anyio.CancelScope(shield=True):
                                await anyio.sleep(self.winddown)
                            self.history.end(self.name, allocation.items)


def divided(members: list[Member], items: list[str] = ITEMS) -> bool:
    """Every member holds its share of ``items`` by kazoo's division among ``members``."""
    names = [m.name for m in members]
    return all(
        m.current is not None and list(m.current) == partition(m.name, names, items)
        for m in members
    )


@asynccontextmanager
async def members(
    hosts: str, namespace: str, names: list[str], history: History, **kwargs: object
) -> AsyncIterator[list[Member]]:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        out = []
        for name in names:
            client = await stack.enter_async_context(
                Client(hosts, namespace=namespace, session_timeout=4)
            )
            member = Member(client, name, history, **kwargs)  # type: ignore[arg-type]
            out.append(member)
            tg.start_soon(member.run)
        yield out
        tg.cancel_scope.cancel()


async def test_members_divide_the_set_and_no_item_is_ever_held_twice(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    history = History()
    # work winds down for longer than the others wait for the party to settle: a member that
    # released its locks before its work ended would be caught working beside the next holder
    async with members(zk_server.hosts, namespace, ["m1", "m2"], history, winddown=1.0) as ms:
        await eventually(lambda: divided(ms), 20)
        async with members(zk_server.hosts, namespace, ["m3"], history, winddown=1.0) as more:
            await eventually(lambda: divided(ms + more), 20)
            ms[0].scope.cancel()  # m1 leaves
            await eventually(lambda: divided(ms[1:] + more), 20)
        await eventually(lambda: divided(ms[1:]), 20)
        # the party and the locks hold only what the members left hold
        assert len(await zk.children("/work/party")) == 1
        for item in ITEMS:
            assert len(await zk.children(f"/work/locks/{item}")) == 1
    assert history.overlaps == []
    for item in ITEMS:
        assert await zk.children(f"/work/locks/{item}") == []
    assert await zk.children("/work/party") == []


# -- kazoo interop -------------------------------------------------------------------------
@asynccontextmanager
async def kazoo_partitioner(
    zk_server: ZooKeeperServer, zk: Client, name: str
) -> AsyncIterator[list[list[str] | None]]:
    """A kazoo SetPartitioner driven in a thread as kazoo's docs drive it; yields a one-item list
    holding its acquired items (None while not acquired)."""
    kazoo = KazooClient(hosts=zk_server.hosts + zk.namespace, timeout=10)
    await anyio.to_thread.run_sync(lambda: kazoo.start(timeout=15))
    acquired: list[list[str] | None] = [None]
    stop = threading.Event()

    def drive() -> None:
        qp = kazoo.SetPartitioner("/work", set=ITEMS, identifier=name, time_boundary=0.3)
        while not stop.is_set():
            if qp.failed:
                raise AssertionError("kazoo's partitioner failed")
            if qp.release:
                acquired[0] = None
                qp.release_set()
            elif qp.acquired:
                acquired[0] = list(qp)
                time.sleep(0.02)
            else:
                acquired[0] = None
                qp.wait_for_acquire(0.1)
        qp.finish()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: anyio.to_thread.run_sync(drive, abandon_on_cancel=False))
            try:
                yield acquired
            finally:
                stop.set()
    finally:
        await anyio.to_thread.run_sync(kazoo.stop)
        kazoo.close()


async def test_kazoo_and_aiocoord_members_divide_the_same_set(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    history = History()
    async with kazoo_partitioner(zk_server, zk, "k") as theirs:
        await eventually(lambda: theirs[0] == ITEMS, 20)  # alone: kazoo takes everything
        async with members(zk_server.hosts, namespace, ["a"], history) as (ours,):
            # ours joins: kazoo releases, both divide the set by the same rule
            await eventually(
                lambda: (
                    theirs[0] == partition("k", ["a", "k"], ITEMS)
                    and ours.current is not None
                    and list(ours.current) == partition("a", ["a", "k"], ITEMS)
                ),
                20,
            )
        await eventually(lambda: theirs[0] == ITEMS, 20)  # ours left: kazoo takes it all again
    # and the other way round: kazoo joins a party of ours
    async with members(zk_server.hosts, namespace, ["a"], history) as (ours,):
        await eventually(lambda: divided([ours]), 20)
        async with kazoo_partitioner(zk_server, zk, "k") as theirs:
            await eventually(
                lambda: (
                    theirs[0] == partition("k", ["a", "k"], ITEMS)
                    and ours.current is not None
                    and list(ours.current) == partition("a", ["a", "k"], ITEMS)
                ),
                20,
            )
        await eventually(lambda: divided([ours]), 20)
    assert history.overlaps == []


# -- real faults ---------------------------------------------------------------------------
def member_process(
    zk_server: ZooKeeperServer, zk: Client, name: str, items: str, mode: str
) -> list[str]:
    """A member process (session timeout 2 s, the party settling for 0.3 s)."""
    args = [zk_server.hosts, zk.namespace, "/work", "2", name, items, "0.3", mode]
    return [sys.executable, str(PROCESS), *args]


async def test_kill_9_of_a_member_hands_its_items_over(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    history = History()
    cmd = member_process(zk_server, zk, "p", ",".join(ITEMS), "hold")
    async with await anyio.open_process(cmd, env=ENV) as proc:
        try:
            assert proc.stdout is not None
            async with members(zk_server.hosts, namespace, ["m"], history) as (m,):
                while True:  # the process's allocation once both are members
                    line = await read_line(proc.stdout, 30)
                    if line.strip() == f"allocated {','.join(partition('p', ['m', 'p'], ITEMS))}":
                        break
                await eventually(lambda: m.current == tuple(partition("m", ["m", "p"], ITEMS)), 20)
                history.start("p", tuple(partition("p", ["m", "p"], ITEMS)))
                proc.kill()
                killed = time.monotonic()
                await proc.wait()
                history.end("p", tuple(partition("p", ["m", "p"], ITEMS)))
                await eventually(lambda: m.current == tuple(ITEMS), 20)
                took = time.monotonic() - killed
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    assert history.overlaps == []
    # the session timeout + a server tick, the party settling, + 1 s (a loaded machine: + 1 s)
    assert took < 2 + 0.2 + 0.3 + 1 + 1


async def test_a_paused_member_is_fenced_then_rejoins(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create("/owner/x", b"", makepath=True)
    history = History()

    async def write_b(allocation: Allocation) -> None:
        if allocation.items:
            await allocation.holds["x"].guard([Op.set_data("/owner/x", b"b")])

    cmd = member_process(zk_server, zk, "a", "x", "write")  # "a": x is its while it is a member
    async with await anyio.open_process(cmd, env=ENV) as proc:
        try:
            assert proc.stdout is not None
            stdout = proc.stdout

            async def line_starting(prefix: str) -> str:
                while not (line := await read_line(stdout, 30)).startswith(prefix):
                    pass
                return line.strip()

            assert await line_starting("allocated") == "allocated x"
            async with members(
                zk_server.hosts, namespace, ["b"], history, items=["x"], on_allocation=write_b
            ) as (b,):
                await eventually(lambda: b.current == (), 20)
                await line_starting("wrote x a:1:")
                proc.send_signal(signal.SIGSTOP)  # past its session timeout (2 s)
                await eventually(lambda: b.current == ("x",), 20)
                assert (await zk.get("/owner/x"))[0] == b"b"
                proc.send_signal(signal.SIGCONT)
                # its next write (the allocation it still works on) is refused ...
                await line_starting("refused x")
                assert (await zk.get("/owner/x"))[0] == b"b"
                # ... and it joins again: x is its again once b has let go
                assert await line_starting("allocated") == "allocated x"
                await line_starting("wrote x a:2:")
                await eventually(lambda: b.current == (), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_cancelled_while_allocating_leaves_no_node(zk: Client) -> None:
    holder = SetPartitioner(zk, "/work", ITEMS, "m1", time_boundary=0.1)
    async with holder:
        first = await holder.__anext__()  # taken and never let go: m1 keeps every item
        assert first.items == tuple(ITEMS)
        async with Client(zk.hosts[0], namespace=zk.namespace, session_timeout=4) as other:
            waiting = SetPartitioner(other, "/work", ITEMS, "m2", time_boundary=0.1)
            mine = partition("m2", ["m1", "m2"], ITEMS)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def allocate() -> None:
                        async with waiting:
                            await waiting.__anext__()
                            raise AssertionError("allocated while m1 holds everything")

                    tg.start_soon(allocate)
                    for item in mine:  # m2 queues for the lock of each of its items
                        await eventually_count(zk, f"/work/locks/{item}", 2)
                    scope.cancel()
            assert first.revoked is not None  # (m2's joining revoked it: m1 did not let go)
            for item in ITEMS:
                assert len(await zk.children(f"/work/locks/{item}")) == 1
            assert len(await zk.children("/work/party")) == 1


async def eventually_count(zk: Client, path: str, count: int) -> None:
    await eventually_async(count_is(zk, path, count, exactly=True), 20)


async def test_a_lost_create_reply_leaves_no_orphan(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create("/work/party", makepath=True)  # the first request held back is the join
    async with through_proxy(zk_server, namespace) as (proxy, client):
        session = client.session_id

        async def allocate() -> tuple[tuple[str, ...], int, list[int]]:
            async with SetPartitioner(client, "/work", ITEMS, "m", time_boundary=0.1) as part:
                allocation = await part.__anext__()
                locks = [len(await zk.children(f"/work/locks/{i}")) for i in ITEMS]
                return allocation.items, len(await zk.children("/work/party")), locks

        outcome = await lose_reply(proxy, allocate, count_is(zk, "/work/party", 1))
        assert client.session_id == session and outcome.error is None
        assert outcome.value == (tuple(ITEMS), 1, [1] * len(ITEMS))
        await eventually_count(zk, "/work/party", 0)
        for item in ITEMS:
            await eventually_count(zk, f"/work/locks/{item}", 0)


@pytest.mark.parametrize("bad", ["a/b", ""])
def test_bad_items_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="node name"):
        SetPartitioner(None, "/work", [bad])  # type: ignore[arg-type]


async def test_a_suspended_member_gives_up_its_items_and_allocates_again(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with (
        through_proxy(zk_server, namespace) as (proxy, client),
        SetPartitioner(client, "/work", ITEMS, "m", time_boundary=0.1) as part,
    ):
        first = await part.__anext__()
        with anyio.fail_after(20):
            with first:  # cancelled: the member cannot know it still holds its locks
                proxy.cut()
                await anyio.sleep_forever()
            second = await part.__anext__()
        assert first.revoked is not None and "suspended" in first.revoked
        assert second.items == tuple(ITEMS) and second.revoked is None
        for item in ITEMS:  # held again: new lock nodes
            assert second.holds[item].token.czxid > first.holds[item].token.czxid


async def test_a_party_change_while_waiting_for_locks_gives_them_up(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    history = History()
    holder = SetPartitioner(zk, "/work", ["a", "b"], "m1", time_boundary=0.1)
    async with holder:
        first = await holder.__anext__()  # taken and never let go: m1 keeps a and b
        assert first.items == ("a", "b")
        kwargs: dict[str, object] = {"items": ["a", "b"], "boundary": 0.1}
        async with members(zk_server.hosts, namespace, ["m2"], history, **kwargs) as (m2,):
            await eventually_count(zk, "/work/locks/b", 2)  # m2 queues for b (m1: a, m2: b)
            async with members(zk_server.hosts, namespace, ["m0"], history, **kwargs):
                # m0: a, m1: b, m2: nothing. m2 leaves b's queue and takes its empty share,
                # though m1 still holds everything
                await eventually(lambda: m2.current == (), 20)
                await eventually_count(zk, "/work/locks/b", 1)
    assert history.overlaps == []
