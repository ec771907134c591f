"""Lock, ReadLock/WriteLock and Semaphore against a real ZooKeeper: kazoo's layouts (kazoo
processes contend with aiocoord ones, both ways), FIFO handover, no herd, fencing, kill -9 of a
holder, session expiry, cancellation and a lost create reply."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from kazoo.exceptions import LockTimeout

from aiocoord import (
    Client,
    Lock,
    LockHold,
    LockLost,
    MaxLeasesMismatch,
    Op,
    OpResult,
    ReadLock,
    Semaphore,
    WriteLock,
)
from aiocoord.recipes.lock import predecessor
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from aiocoord.transport.watches import WatchKind
from tests.helpers import count_is, eventually, eventually_async, holds, kazoo_client, read_line
from tests.recipes.test_config import watched_by
from tests.transport.test_protected_create import lose_reply, through_proxy

LOCK_PROCESS = Path(__file__).with_name("lock_process.py")
CHILD = WatchKind.CHILD
#: the holder processes import the tree under test (a worktree, make mutate's copy), not the
#: installed one
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
NODE = re.compile(r"^_c_[0-9a-f-]{36}-__lock__\d{10}$")


async def settle(*clients: Client) -> None:
    for client in clients:
        await client.sync("/")
        await client.exists("/")


# -- the pure decision ---------------------------------------------------------------------
def test_predecessor_is_the_nearest_conflicting_node_ahead() -> None:
    kids = ["a__lock__0000000001", "b__rlock__0000000002", "c__rlock__0000000003"]
    kids += ["d__lock__0000000004", "other0000000000"]  # not a contender: no __lock__ suffix
    w = ("__lock__", "__rlock__")
    assert predecessor("a__lock__0000000001", kids, "__lock__", w) is None
    assert predecessor("d__lock__0000000004", kids, "__lock__", w) == "c__rlock__0000000003"
    # readers pass readers: the second reader waits only for the writer ahead of both
    assert predecessor("c__rlock__0000000003", kids, "__rlock__", ("__lock__",)) == kids[0]
    assert predecessor("d__lock__0000000004", kids, "__lock__", ("__lock__",)) == kids[0]
    with pytest.raises(ValueError, match="not a __lock__ contender"):
        predecessor("other0000000000", kids, "__lock__", ("__lock__",))


# -- Lock ----------------------------------------------------------------------------------
async def test_layout_token_contenders_and_release(
    zk: Client, caplog: pytest.LogCaptureFixture
) -> None:
    lock = Lock(zk, "/locks/db", "me")
    hold = await lock.acquire()
    (name,) = await zk.children("/locks/db")
    assert NODE.match(name), name
    stat = await zk.exists(f"/locks/db/{name}")
    assert stat is not None and hold.token.czxid == stat.czxid and lock.held
    assert await Lock(zk, "/locks/db").contenders() == ["me"]
    await lock.release()
    assert not lock.held and await zk.children("/locks/db") == []
    async with lock as again:
        assert again.token.czxid > hold.token.czxid
    assert await zk.children("/locks/db") == []
    # a release is not a loss: the watch the delete fires is expected, not reported
    assert hold.lost == again.lost == "released"
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text


class Holder:
    """One contender in its own session, holding the lock until told to release."""

    def __init__(self, client: Client, lock: Lock, order: list[str], name: str) -> None:
        self.client, self.lock, self.order, self.name = client, lock, order, name
        self.held = anyio.Event()
        self.release = anyio.Event()

    async def run(self) -> None:
        async with self.lock:
            self.order.append(self.name)
            self.held.set()
            await self.release.wait()


@asynccontextmanager
async def holders(
    hosts: str, namespace: str, count: int, order: list[str]
) -> AsyncIterator[list[Holder]]:
    """``count`` contenders for /lock, queued in order (holder i has the i-th node)."""
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        out = []
        for i in range(count):
            client = await stack.enter_async_context(
                Client(hosts, namespace=namespace, session_timeout=4)
            )
            h = Holder(client, Lock(client, "/lock", f"h{i}"), order, f"h{i}")
            out.append(h)
            tg.start_soon(h.run)
            await eventually(lambda h=h: h.lock.node is not None, 5)
        yield out
        tg.cancel_scope.cancel()


async def test_fifo_handover_wakes_only_the_next_waiter(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    order: list[str] = []
    async with holders(zk_server.hosts, namespace, 6, order) as hs:
        with anyio.fail_after(5):
            await hs[0].held.wait()
        await settle(*(h.client for h in hs))
        assert await hs[0].lock.contenders() == [f"h{i}" for i in range(6)]
        for i in range(5):
            hs[i].release.set()
            with anyio.fail_after(5):
                await hs[i + 1].held.wait()
            await settle(*(h.client for h in hs[i + 1 :]))
            # each release woke the next waiter once, and no one behind it
            await holds(
                lambda i=i: (
                    [h.lock._wakeups for h in hs[i + 1 :]] == [1] + [0] * (4 - i)
                    and order == [f"h{j}" for j in range(i + 2)]
                ),
                0.2,
            )
        hs[5].release.set()


async def test_cancel_or_timeout_while_waiting_leaves_no_node(zk: Client) -> None:
    holder = Lock(zk, "/lock", "holder")
    await holder.acquire()
    waiter = Lock(zk, "/lock", "waiter")
    with pytest.raises(TimeoutError):
        await waiter.acquire(timeout=0.3)
    assert await holder.contenders() == ["holder"]
    with anyio.move_on_after(0.3):
        async with waiter:
            raise AssertionError("not held")  # pragma: no cover
    assert await holder.contenders() == ["holder"] and waiter.node is None
    await holder.release()
    async with waiter:  # usable again
        assert await holder.contenders() == ["waiter"]


async def test_a_waiter_cancelled_or_timed_out_leaves_no_watch(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    holder = Lock(zk, "/lock", "holder")
    await holder.acquire()
    async with Client(zk_server.hosts, namespace=zk.namespace) as other:
        waiter = Lock(other, "/lock", "waiter")
        with pytest.raises(TimeoutError):
            await waiter.acquire(timeout=0.5)
        with anyio.move_on_after(0.5):
            async with waiter:
                raise AssertionError("not held")  # pragma: no cover
        await settle(other)
        assert watched_by(zk_server, other) == []
    await holder.release()


async def test_a_lost_create_reply_leaves_no_orphan(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create("/lock")  # so the first request whose reply is held is the create
    async with through_proxy(zk_server, namespace) as (proxy, client):
        lock = Lock(client, "/lock", "blip")
        session = client.session_id
        outcome = await lose_reply(proxy, lock.acquire, count_is(zk, "/lock", 1))
        assert client.session_id == session and outcome.error is None
        assert isinstance(outcome.value, LockHold) and lock.held
        assert len(await zk.children("/lock")) == 1
        await lock.release()
    assert await zk.children("/lock") == []


async def test_an_expired_holder_is_fenced_and_its_block_cancelled(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create("/fenced", b"")
    async with Client(zk_server.hosts, namespace=namespace, session_timeout=4) as old:
        lock = Lock(old, "/lock", "old")
        hold = await lock.acquire()
        await hold.guard([Op.set_data("/fenced", b"old")])
        await expire_session(old)
        await eventually(lambda: not lock.held, 10)
        await old.wait_connected()  # on a new session: only the node check refuses the write
        with pytest.raises(LockLost):
            await hold.guard([Op.set_data("/fenced", b"late")])
        assert (await zk.get("/fenced"))[0] == b"old"
        async with Lock(zk, "/lock", "new") as new:
            assert new.token.czxid > hold.token.czxid
            await new.guard([Op.set_data("/fenced", b"new")])
        assert (await zk.get("/fenced"))[0] == b"new"
        await lock.release()
        # under `async with`, the block is cancelled and LockLost raised
        with pytest.raises(LockLost), anyio.fail_after(10):
            async with lock:
                await expire_session(old)
                await anyio.sleep_forever()


async def test_a_suspended_holder_stops_and_releases(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        lock = Lock(client, "/lock", "blip")
        with pytest.raises(LockLost, match="suspended"), anyio.fail_after(10):
            async with lock:
                proxy.cut()  # the session lives on, but this holder cannot know it holds
                await anyio.sleep_forever()
        assert not lock.held
        # released: the delete owed while disconnected is done once the session is back
        await eventually_async(count_is(zk, "/lock", 0, exactly=True), 10)


async def test_kill_9_of_the_holder_hands_over_after_the_session_timeout(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    timeout = 2.0
    cmd = [sys.executable, str(LOCK_PROCESS), zk_server.hosts, zk.namespace, "/lock", "2", "p"]
    async with await anyio.open_process(cmd, env=ENV) as proc:
        try:
            assert proc.stdout is not None
            assert (await read_line(proc.stdout, 20)).startswith("held")
            waiter = Lock(zk, "/lock", "next")
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.acquire)
                await eventually(lambda: waiter.node is not None, 5)
                await settle(zk)
                await holds(lambda: not waiter.held)
                proc.kill()
                killed = time.monotonic()
                await eventually(lambda: waiter.held, 10)
                took = time.monotonic() - killed
            await waiter.release()
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    assert took < timeout + 0.2 + 1  # session timeout + a server tick + 1 s


@asynccontextmanager
async def holder_process(
    zk_server: ZooKeeperServer, zk: Client, path: str, *extra: str
) -> AsyncIterator[anyio.abc.Process]:
    """lock_process.py holding ``path`` (2 s session), once it says it holds it."""
    cmd = [sys.executable, str(LOCK_PROCESS), zk_server.hosts, zk.namespace, path, "2", "p"]
    async with await anyio.open_process([*cmd, *extra], env=ENV, stderr=None) as proc:
        try:
            assert proc.stdout is not None
            assert (await read_line(proc.stdout, 20)).startswith("held")
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


@pytest.mark.parametrize("leases", [0, 1], ids=["lock", "semaphore"])
async def test_a_sigstopped_holder_past_its_timeout_is_fenced_when_it_resumes(
    zk: Client, zk_server: ZooKeeperServer, leases: int
) -> None:
    await zk.create("/fenced", b"")
    path = "/sem" if leases else "/lock"
    async with holder_process(zk_server, zk, path, str(leases), "/fenced") as proc:
        assert proc.stdout is not None
        await eventually_async(lambda: fenced_is(zk, b"p"), 10)
        waiter = Semaphore(zk, path, "next", max_leases=1) if leases else Lock(zk, path, "next")
        proc.send_signal(signal.SIGSTOP)
        try:
            hold = await waiter.acquire(timeout=15)  # the paused holder's session expired
            await hold.guard([Op.set_data("/fenced", b"next")])
        finally:
            proc.send_signal(signal.SIGCONT)
        # resumed: its block is cancelled, and a write it still makes through the hold is refused
        assert (await read_line(proc.stdout, 15)).startswith("lost")
        assert (await read_line(proc.stdout, 15)).strip() == "late write refused"
        assert await fenced_is(zk, b"next") and waiter.held
        await waiter.release()


async def test_kill_9_of_a_semaphore_lease_holder_frees_its_lease(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    async with holder_process(zk_server, zk, "/sem", "1") as proc:
        assert await zk.children("/sem") != []
        waiter = Semaphore(zk, "/sem", "next", max_leases=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.acquire)
            await settle(zk)
            await holds(lambda: not waiter.held)
            proc.kill()
            await eventually(lambda: waiter.held, 15)
        assert await waiter.lease_holders() == ["next"]
        await waiter.release()
    assert await zk.children("/sem") == []


class _FaultAtTheLeaseCreate(Client):
    """A client whose proxy holds back its replies (``fault = "replies"``) or all its traffic
    (``"all"``) from the moment it first sends the create of a lease node."""

    proxy: TcpProxy
    fault = "replies"
    fired = False

    async def multi(self, ops: Sequence[Op]) -> list[OpResult]:
        if not self.fired and any(op.path.startswith("/sem/") for op in ops):
            self.fired = True
            self.proxy.stall_replies() if self.fault == "replies" else self.proxy.stall()
        return await super().multi(ops)


async def test_a_lost_lease_create_reply_leaves_one_lease(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        client = _FaultAtTheLeaseCreate(proxy.address, namespace=namespace, session_timeout=20)
        client.proxy = proxy
        async with client:
            # one lease: the one it made itself must not count against it when it goes on
            # after the gate's hold ended with the connection
            sem = Semaphore(client, "/sem", "blip", max_leases=1)
            session = client.session_id
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sem.acquire)
                    await eventually_async(count_is(zk, "/sem", 1), 10)
                    proxy.cut()  # the lease was made; its reply is lost with the connection
                    proxy.resume()
            assert sem.held and client.session_id == session
            assert await sem.lease_holders() == ["blip"]  # adopted, not made twice
            await sem.release()
    assert await zk.children("/sem") == []


async def test_a_partition_past_the_timeout_during_a_lease_create_makes_no_second_holder(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """A counts 0 of 1 leases under the gate and sends its lease create into a silent network;
    the server expires its session (gate and all), B takes the lease; the network heals. A, on
    its new session, must wait for B: a lease nobody counted would make two holders."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        client = _FaultAtTheLeaseCreate(proxy.address, namespace=namespace, session_timeout=4)
        client.proxy, client.fault = proxy, "all"
        async with client:
            a = Semaphore(client, "/sem", "a", max_leases=1)
            b = Semaphore(zk, "/sem", "b", max_leases=1)
            old = client.session_id
            with anyio.fail_after(50):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(a.acquire)
                    await eventually(lambda: client.fired, 10)
                    await b.acquire(timeout=20)  # once the server expired A's session
                    proxy.resume()
                    await eventually(lambda: client.session_id not in (0, old), 20)
                    # A holds the gate again and waits, watching the leases (its children watch
                    # registered: wchp does not list children watches): it does not hold
                    await eventually(lambda: "/sem" in client._session.watches._reg[CHILD], 20)
                    assert not a.held and await b.lease_holders() == ["b"]
                    await b.release()
                    await eventually(lambda: a.held, 10)
            assert await a.lease_holders() == ["a"]
            await a.release()


async def test_a_waiter_outlives_the_deletion_of_the_lock_path(zk: Client) -> None:
    """An operator removes the whole lock path (holder's node included) while one waits: the
    waiter contends again on a new path, as kazoo's does, and is not failed with NoNode."""
    holder = Lock(zk, "/locks/db", "holder")
    await holder.acquire()
    waiter = Lock(zk, "/locks/db", "waiter")
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.acquire)
        await eventually(lambda: waiter.node is not None, 5)
        kids = await zk.children("/locks/db")  # at once (a recursive delete is not atomic)
        await zk.multi([*(Op.delete(f"/locks/db/{k}") for k in kids), Op.delete("/locks/db")])
        await eventually(lambda: waiter.held, 10)
    assert await waiter.contenders() == ["waiter"]
    await waiter.release()
    await holder.release()


async def fenced_is(zk: Client, data: bytes) -> bool:
    return (await zk.get("/fenced"))[0] == data


# -- kazoo interop -------------------------------------------------------------------------


async def test_kazoo_and_aiocoord_exclude_each_other_in_fifo_order(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    async with kazoo_client(zk_server, zk) as kazoo:
        ours = Lock(zk, "/lock", "aiocoord")
        await ours.acquire()
        theirs = kazoo.Lock("/lock", "kazoo")
        with pytest.raises(LockTimeout):
            await anyio.to_thread.run_sync(lambda: theirs.acquire(timeout=0.5))
        await ours.release()
        assert await anyio.to_thread.run_sync(lambda: theirs.acquire(timeout=5))
        # kazoo holds; an aiocoord waiter queues, then a second kazoo one behind it
        later = kazoo.Lock("/lock", "kazoo-later")
        async with anyio.create_task_group() as tg:
            tg.start_soon(ours.acquire)
            await eventually(lambda: ours.node is not None, 5)
            got_later = anyio.Event()

            async def kazoo_waits() -> None:
                await anyio.to_thread.run_sync(lambda: later.acquire(timeout=10))
                got_later.set()

            tg.start_soon(kazoo_waits)
            await eventually(lambda: later.node is not None, 5)
            assert await ours.contenders() == ["kazoo", "aiocoord", "kazoo-later"]
            await settle(zk)
            await holds(lambda: not ours.held)
            await anyio.to_thread.run_sync(theirs.release)
            await eventually(lambda: ours.held, 5)
            assert not got_later.is_set()
            await ours.release()
            with anyio.fail_after(10):
                await got_later.wait()
        await anyio.to_thread.run_sync(later.release)


# -- ReadLock / WriteLock ------------------------------------------------------------------
async def test_readers_share_a_writer_excludes(zk: Client) -> None:
    r1, r2, w = ReadLock(zk, "/rw", "r1"), ReadLock(zk, "/rw", "r2"), WriteLock(zk, "/rw", "w")
    await r1.acquire()
    await r2.acquire(timeout=2)  # readers share
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.acquire)
        await eventually(lambda: w.node is not None, 5)
        r3 = ReadLock(zk, "/rw", "r3")
        tg.start_soon(r3.acquire)  # queued behind the writer
        await eventually(lambda: r3.node is not None, 5)
        await settle(zk)
        await holds(lambda: not w.held and not r3.held)
        await r1.release()
        await holds(lambda: not w.held, 0.2)
        await r2.release()
        await eventually(lambda: w.held, 5)
        await holds(lambda: not r3.held, 0.2)
        await w.release()
        await eventually(lambda: r3.held, 5)
    await r3.release()


async def test_kazoo_read_write_locks_and_aiocoord_ones_contend(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    async with kazoo_client(zk_server, zk) as kazoo:
        theirs = kazoo.WriteLock("/rw", "kazoo-writer")
        await anyio.to_thread.run_sync(theirs.acquire)
        reader = ReadLock(zk, "/rw", "aiocoord-reader")
        with pytest.raises(TimeoutError):
            await reader.acquire(timeout=0.5)
        await anyio.to_thread.run_sync(theirs.release)
        await reader.acquire(timeout=5)
        # a kazoo reader shares with ours; a kazoo writer waits for both
        kreader = kazoo.ReadLock("/rw", "kazoo-reader")
        assert await anyio.to_thread.run_sync(lambda: kreader.acquire(timeout=5))
        with pytest.raises(LockTimeout):
            await anyio.to_thread.run_sync(lambda: theirs.acquire(timeout=0.5))
        writer = WriteLock(zk, "/rw", "aiocoord-writer")
        with pytest.raises(TimeoutError):
            await writer.acquire(timeout=0.5)
        await reader.release()
        await anyio.to_thread.run_sync(kreader.release)
        await writer.acquire(timeout=5)
        await writer.release()


# -- Semaphore -----------------------------------------------------------------------------
async def test_semaphore_leases_and_max_leases_check(zk: Client) -> None:
    a, b = Semaphore(zk, "/sem", "a", max_leases=2), Semaphore(zk, "/sem", "b", max_leases=2)
    await a.acquire()
    await b.acquire(timeout=2)
    assert (await zk.get("/sem"))[0] == b"2"
    assert sorted(await a.lease_holders()) == ["a", "b"]
    c = Semaphore(zk, "/sem", "c", max_leases=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(c.acquire)
        await settle(zk)
        await holds(lambda: not c.held)
        await a.release()
        await eventually(lambda: c.held, 5)
    assert sorted(await b.lease_holders()) == ["b", "c"]
    with pytest.raises(MaxLeasesMismatch, match="inconsistent max leases: 2, expected: 3"):
        await Semaphore(zk, "/sem", max_leases=3).acquire()
    await b.release()
    await c.release()
    assert await zk.children("/sem") == []


async def test_a_semaphore_waiter_cancelled_or_timed_out_leaves_no_node(zk: Client) -> None:
    holder = Semaphore(zk, "/sem", "holder", max_leases=1)
    await holder.acquire()
    waiter = Semaphore(zk, "/sem", "waiter", max_leases=1)
    with pytest.raises(TimeoutError):
        await waiter.acquire(timeout=0.5)
    with anyio.move_on_after(0.5):
        async with waiter:
            raise AssertionError("not held")  # pragma: no cover
    assert await holder.lease_holders() == ["holder"]
    assert await zk.children("/sem-__lock__") == []  # nor is its gate lock held or waited for
    assert "/sem" not in zk._session.watches._reg[CHILD]  # nor its watch on the leases
    await holder.release()
    async with waiter:
        assert await holder.lease_holders() == ["waiter"]


async def test_semaphore_shared_with_kazoo(zk: Client, zk_server: ZooKeeperServer) -> None:
    async with kazoo_client(zk_server, zk) as kazoo:
        theirs = kazoo.Semaphore("/sem", "kazoo", max_leases=1)
        assert await anyio.to_thread.run_sync(lambda: theirs.acquire(timeout=5))
        ours = Semaphore(zk, "/sem", "aiocoord", max_leases=1)
        with pytest.raises(TimeoutError):
            await ours.acquire(timeout=0.5)
        await anyio.to_thread.run_sync(theirs.release)
        hold = await ours.acquire(timeout=5)
        stat = await zk.exists(hold.path)
        assert stat is not None and stat.czxid == hold.token.czxid
        with pytest.raises(LockTimeout):
            await anyio.to_thread.run_sync(lambda: theirs.acquire(timeout=0.5))
        assert await anyio.to_thread.run_sync(theirs.lease_holders) == ["aiocoord"]
        with pytest.raises(ValueError, match="Inconsistent max leases"):
            await anyio.to_thread.run_sync(
                lambda: kazoo.Semaphore("/sem", max_leases=2).acquire(timeout=1)
            )
        await ours.release()
        assert await anyio.to_thread.run_sync(lambda: theirs.acquire(timeout=5))
        await anyio.to_thread.run_sync(theirs.release)
