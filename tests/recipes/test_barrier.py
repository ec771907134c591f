"""Barrier and DoubleBarrier against a real ZooKeeper: kazoo's layouts (kazoo members wait with
aiocoord ones, both ways), no early leave, kill -9 of a member, cancellation (no node, no watch
left), a lost create reply, an owed delete, session expiry while entering."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from aiocoord import Barrier, Client, DoubleBarrier, Op, SessionState
from aiocoord.testing import ZooKeeperServer, expire_session
from tests.helpers import (
    count_is,
    eventually,
    eventually_async,
    gone,
    holds,
    kazoo_client,
    read_line,
)
from tests.transport.test_protected_create import through_proxy

BARRIER_PROCESS = Path(__file__).with_name("barrier_process.py")
ROOT = Path(__file__).resolve().parents[2]
MEMBER = re.compile(r"^[0-9a-f]{32}$")


async def settle(*clients: Client) -> None:
    for client in clients:
        await client.sync("/")
        await client.exists("/")


async def in_daemon_thread(call: Callable[[], object], timeout: float = 30) -> None:
    """Run a blocking kazoo call that may never return (kazoo's enter() and leave() wait
    unbounded) in a daemon thread, bounded: a failing test is not kept alive by it."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # re-raised in the test
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    await eventually(done.is_set, timeout)
    if errors:
        raise errors[0]


@asynccontextmanager
async def clients(
    zk_server: ZooKeeperServer, namespace: str, n: int
) -> AsyncIterator[list[Client]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                Client(zk_server.hosts, namespace=namespace, session_timeout=4)
            )
            for _ in range(n)
        ]


def no_watches(client: Client) -> bool:
    return not client._session.watches


# -- Barrier -------------------------------------------------------------------------------
async def test_barrier_holds_waiters_until_removed(zk: Client) -> None:
    barrier = Barrier(zk, "/b/gate")
    with anyio.fail_after(5):
        await barrier.wait()  # not up: at once
    await barrier.create()
    await barrier.create()  # up already: fine
    assert await zk.exists("/b/gate") is not None
    passed = anyio.Event()

    async def waiter() -> None:
        await barrier.wait()
        passed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await settle(zk)
        await holds(lambda: not passed.is_set())
        assert await Barrier(zk, "/b/gate").remove() is True
        with anyio.fail_after(5):
            await passed.wait()
    assert await barrier.remove() is False
    assert no_watches(zk)


async def test_barrier_wait_cancelled_leaves_no_watch(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with clients(zk_server, namespace, 1) as (client,):
        barrier = Barrier(client, "/gate")
        await barrier.create()
        with anyio.move_on_after(0.3) as scope:
            await barrier.wait()
        assert scope.cancelled_caught
        assert no_watches(client)


async def test_barrier_wait_survives_a_blip_and_an_expiry(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await Barrier(zk, "/gate").create()
    async with through_proxy(zk_server, namespace) as (proxy, client):
        barrier = Barrier(client, "/gate")
        passed = anyio.Event()

        async def waiter() -> None:
            await barrier.wait()
            passed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await eventually(lambda: bool(client._session.watches), 5)
            await expire_session(client)  # LOST: the wait goes on, on the new session
            await client.wait_connected()
            await settle(client)
            await holds(lambda: not passed.is_set())
            proxy.cut()  # removed while disconnected: seen after the reconnect
            await eventually(lambda: client.state is SessionState.SUSPENDED, 10)
            assert await Barrier(zk, "/gate").remove()
            with anyio.fail_after(20):
                await passed.wait()
        assert no_watches(client)


async def test_barrier_shared_with_kazoo(zk: Client, zk_server: ZooKeeperServer) -> None:
    async with kazoo_client(zk_server, zk) as kazoo:
        theirs = kazoo.Barrier("/gate")
        await anyio.to_thread.run_sync(theirs.create)
        ours = Barrier(zk, "/gate")
        passed = anyio.Event()

        async def waiter() -> None:
            await ours.wait()
            passed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await settle(zk)
            await holds(lambda: not passed.is_set())
            assert await anyio.to_thread.run_sync(theirs.remove)
            with anyio.fail_after(5):
                await passed.wait()
        # and the other way round
        await ours.create()
        assert not await anyio.to_thread.run_sync(lambda: theirs.wait(timeout=0.3))
        async with anyio.create_task_group() as tg:
            cleared: list[bool] = []

            async def kazoo_waits() -> None:
                cleared.append(await anyio.to_thread.run_sync(lambda: theirs.wait(timeout=10)))

            tg.start_soon(kazoo_waits)
            await anyio.sleep(0.2)  # kazoo's wait has set its watch (a late one sees no node)
            assert await ours.remove()
        assert cleared == [True]


# -- DoubleBarrier -------------------------------------------------------------------------
class Member:
    """One member in its own session: enters, stays until told to leave, leaves."""

    def __init__(self, client: Client, path: str, num: int, name: str) -> None:
        self.client, self.name = client, name
        self.barrier = DoubleBarrier(client, path, num, name)
        self.entered = anyio.Event()
        self.go = anyio.Event()
        self.left = anyio.Event()
        self.enter_wakeups = -1

    async def run(self) -> None:
        async with self.barrier:
            self.enter_wakeups = self.barrier._wakeups
            self.entered.set()
            await self.go.wait()
        self.left.set()


async def test_double_barrier_layout_enter_together_leave_together(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with clients(zk_server, namespace, 4) as cs, anyio.create_task_group() as tg:
        members = [Member(c, "/db", 4, f"m{i}") for i, c in enumerate(cs)]
        for m in members[:3]:
            tg.start_soon(m.run)
        await eventually_async(count_is(zk, "/db", 3), 5)
        await settle(*cs)
        await holds(lambda: not any(m.entered.is_set() for m in members))
        names = sorted(await zk.children("/db"))
        assert all(MEMBER.match(n) for n in names), names
        data = sorted([(await zk.get(f"/db/{n}"))[0] for n in names])
        assert data == [b"m0", b"m1", b"m2"]
        tg.start_soon(members[3].run)  # completes the count: it makes ready
        with anyio.fail_after(60):
            for m in members:
                await m.entered.wait()
        assert await zk.exists("/db/ready") is not None
        # no herd beyond the one event: each waiter was woken once, the last one not at all
        assert sorted(m.enter_wakeups for m in members) == [0, 1, 1, 1]
        # nobody leaves while one member is still inside
        members.sort(key=lambda m: m.barrier.node_name)
        last = members[1]  # neither the lowest nor the highest
        for m in members:
            if m is not last:
                m.go.set()
        await eventually_async(count_is(zk, "/db", 2, exactly=True), 10)  # the lowest and last
        await settle(*cs)
        await holds(lambda: not any(m.left.is_set() for m in members))
        before = [m.barrier._wakeups for m in members]
        last.go.set()
        with anyio.fail_after(60):
            for m in members:
                await m.left.wait()
        assert all(no_watches(c) for c in cs)
        # each member that left its node waited for the lowest: woken once, when it went
        woken = [m.barrier._wakeups - b for m, b in zip(members, before, strict=True)]
        assert woken[1:] == [1, 1, 1] and woken[0] <= 3, woken
    assert await zk.children("/db") == []


async def test_a_ready_made_and_deleted_at_once_still_opens_the_barrier(zk: Client) -> None:
    """A fast member may enter and leave (deleting ready) before a woken waiter looks."""
    member = DoubleBarrier(zk, "/db", 2, "slow")
    async with anyio.create_task_group() as tg:
        tg.start_soon(member.enter)
        await eventually(lambda: member._node_session != 0, 5)
        await settle(zk)
        await eventually(lambda: bool(zk._session.watches), 5)  # waiting on ready
        await zk.multi([Op.create("/db/ready"), Op.delete("/db/ready")])
        with anyio.fail_after(60):
            await eventually(lambda: member.participating, 10)
    await member.leave()
    assert await zk.children("/db") == []


async def test_cancel_while_waiting_in_enter_or_leave_leaves_no_node(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with clients(zk_server, namespace, 2) as (ca, cb):
        lone = DoubleBarrier(ca, "/db", 2, "lone")
        with anyio.move_on_after(0.5) as scope:
            await lone.enter()
        assert scope.cancelled_caught and not lone.participating
        assert await zk.children("/db") == [] and no_watches(ca)
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.5):
                async with DoubleBarrier(ca, "/db", 2, "timed out"):
                    raise AssertionError("not entered")  # pragma: no cover
        assert await zk.children("/db") == [] and no_watches(ca)
        # in leave: the lowest member waits (with its node) for the other to leave
        a, b = DoubleBarrier(ca, "/db", 2, "a"), DoubleBarrier(cb, "/db", 2, "b")
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.enter)
            tg.start_soon(b.enter)
        low, high = sorted((a, b), key=lambda m: m.node_name)
        with anyio.move_on_after(0.5) as scope:
            await low.leave()
        assert scope.cancelled_caught
        assert await zk.children("/db") == [high.node_name]
        assert no_watches(ca) and no_watches(cb)
        with anyio.fail_after(60):
            await high.leave()  # not stuck: the cancelled member's node is gone
        assert await zk.children("/db") == []


async def test_cancelled_while_disconnected_the_delete_is_owed(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        member = DoubleBarrier(client, "/db", 2, "blip")
        async with anyio.create_task_group() as tg:
            tg.start_soon(member.enter)
            await eventually_async(count_is(zk, "/db", 1), 5)
            proxy.cut()
            await eventually(lambda: client.state is SessionState.SUSPENDED, 10)
            tg.cancel_scope.cancel()
        assert await zk.children("/db") == [member.node_name]  # the session lives on
        with anyio.fail_after(20):
            await client.wait_connected()
        await eventually_async(count_is(zk, "/db", 0, exactly=True), 10)


async def test_a_lost_create_reply_leaves_one_node(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create("/db")
    async with through_proxy(zk_server, namespace) as (proxy, client):
        member = DoubleBarrier(client, "/db", 1, "blip")
        session = client.session_id
        with anyio.fail_after(30):
            proxy.stall_replies()
            async with anyio.create_task_group() as tg:
                tg.start_soon(member.enter)
                await eventually_async(count_is(zk, "/db", 1), 10)  # created; reply held
                made = await zk.exists(member.node)
                proxy.cut()
                proxy.resume()
        assert client.session_id == session and member.participating
        assert sorted(await zk.children("/db")) == sorted([member.node_name, "ready"])
        stat = await zk.exists(member.node)
        assert made is not None and stat == made  # adopted: the node made by the lost create
        assert stat.ephemeral_owner == session
        await member.leave()
    assert await zk.children("/db") == []


async def test_an_expired_waiter_enters_again_on_its_new_session(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with clients(zk_server, namespace, 1) as (client,):
        member = DoubleBarrier(client, "/db", 2, "expired")
        async with anyio.create_task_group() as tg:
            tg.start_soon(member.enter)
            await eventually_async(count_is(zk, "/db", 1), 5)
            old = client.session_id
            await expire_session(client)

            async def remade() -> bool:
                stat = await zk.exists(member.node)
                return stat is not None and stat.ephemeral_owner not in (0, old)

            await eventually_async(remade, 15)
            other = DoubleBarrier(zk, "/db", 2, "other")
            with anyio.fail_after(60):
                await other.enter()
                await eventually(lambda: member.participating, 10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(member.leave)
            tg.start_soon(other.leave)
    assert await zk.children("/db") == []


async def test_kill_9_of_a_member_does_not_keep_the_others_in_leave(
    zk: Client, zk_server: ZooKeeperServer, namespace: str
) -> None:
    timeout = 2.0
    cmd = [sys.executable, str(BARRIER_PROCESS), zk_server.hosts, zk.namespace, "/db", "3", "2",
           "doomed"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's aiocoord, not the installed one
    async with (
        await anyio.open_process(cmd, env=env) as proc,
        clients(zk_server, namespace, 2) as cs,
    ):
        try:
            members = [Member(c, "/db", 3, f"m{i}") for i, c in enumerate(cs)]
            async with anyio.create_task_group() as tg:
                for m in members:
                    tg.start_soon(m.run)
                assert proc.stdout is not None
                assert (await read_line(proc.stdout, 20)).startswith("entered")
                with anyio.fail_after(60):
                    for m in members:
                        await m.entered.wait()
                for m in members:
                    m.go.set()
                await settle(*cs)
                await holds(lambda: not any(m.left.is_set() for m in members))
                proc.kill()
                killed = time.monotonic()
                with anyio.fail_after(15):
                    for m in members:
                        await m.left.wait()
                took = time.monotonic() - killed
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    assert took < timeout + 0.2 + 1  # session timeout + a server tick + 1 s
    await eventually_async(gone(zk, "/db/ready"), 5)
    assert await zk.children("/db") == []


async def test_double_barrier_shared_with_kazoo(zk: Client, zk_server: ZooKeeperServer) -> None:
    async with kazoo_client(zk_server, zk) as kazoo:
        theirs = kazoo.DoubleBarrier("/db", 2, "kazoo")
        ours = DoubleBarrier(zk, "/db", 2, "aiocoord")
        async with anyio.create_task_group() as tg:
            tg.start_soon(in_daemon_thread, theirs.enter)
            await eventually_async(count_is(zk, "/db", 1), 10)
            with anyio.fail_after(60):
                await ours.enter()
        assert theirs.participating and ours.participating
        assert sorted(await zk.children("/db")) == sorted(
            [theirs.node_name, ours.node_name, "ready"]
        )
        assert (await zk.get(f"/db/{theirs.node_name}"))[0] == b"kazoo"
        # kazoo's leave waits for ours
        left = anyio.Event()

        async def kazoo_leaves() -> None:
            await in_daemon_thread(theirs.leave)
            left.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(kazoo_leaves)
            await eventually_async(gone(zk, "/db/ready"), 10)
            await settle(zk)
            await holds(lambda: not left.is_set())
            with anyio.fail_after(60):
                await ours.leave()
                await left.wait()
        assert await zk.children("/db") == []
