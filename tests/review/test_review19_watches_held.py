"""Review 19: attacks on the cancelled-watching-read rule that HELD (kept as regression tests)."""

from __future__ import annotations

import functools
import random

import anyio

from aiocoord import Client, EventType, WatchMode
from aiocoord.testing import TcpProxy, ZooKeeperServer
from tests.helpers import Recorder
from tests.review.test_review19_watches import (
    Notifications,
    _ignore,
    _sentinel,
    _until_watched,
)


async def test_a_new_read_racing_the_drop_of_a_cancelled_one_still_gets_its_event(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    """A get(watch) is cancelled in flight; another get(watch) on the same path is sent at a random
    moment around the cancelled one's reply (and the RemoveWatches that follows it). The new
    watcher must get its event every time."""
    rng = random.Random(19)
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=namespace, session_timeout=10) as zk:
            await zk.create("/d")
            for i in range(25):
                rec = Recorder()
                proxy.stall_replies()
                with anyio.fail_after(10):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(functools.partial(zk.get, "/d", watch=_ignore))
                        await anyio.sleep(0.02)
                        tg.cancel_scope.cancel()
                    proxy.resume()
                    await anyio.sleep(rng.uniform(0, 0.01))
                    await zk.get("/d", watch=rec)
                    await zk.set("/d", str(i).encode())
                    events = await rec.wait(1)
                assert [e.type for e in events] == [EventType.NODE_DATA_CHANGED], i


async def test_cancelled_child_watch_leaves_no_watch_and_others_fire(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=namespace, session_timeout=10) as zk:
            await zk.create("/c")
            await zk.create("/k")
            kept = Recorder()
            await zk.children("/k", watch=kept)
            notes = Notifications(zk)
            proxy.stall_replies()
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(functools.partial(zk.children, "/c", watch=_ignore))
                    tg.start_soon(functools.partial(zk.children, "/k", watch=_ignore))
                    await anyio.sleep(0.3)
                    tg.cancel_scope.cancel()
                proxy.resume()
                await zk.exists("/c")
                await zk.create("/c/x")
                await zk.create("/k/x")
                await kept.wait(1)
                await _sentinel(zk, "/sentinel")
            assert notes.on("/c") == []


async def test_cancelled_reads_then_a_cut_leave_nothing_and_restore_the_rest(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    """Watching reads cancelled in flight, then the connection is cut before their replies come:
    after the reconnect no watch of theirs is on the server, a registered watcher still fires."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=namespace, session_timeout=10) as zk:
            for p in ("/a", "/b", "/kept"):
                await zk.create(p)
            kept = Recorder()
            await zk.get("/kept", watch=kept)
            notes = Notifications(zk)
            proxy.stall_replies()
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(functools.partial(zk.get, "/a", watch=_ignore))
                    tg.start_soon(functools.partial(zk.children, "/b", watch=_ignore))
                    tg.start_soon(
                        functools.partial(zk.add_watch, "/b", _ignore, mode=WatchMode.PERSISTENT)
                    )
                    tg.start_soon(functools.partial(zk.exists, "/missing", watch=_ignore))
                    await anyio.sleep(0.3)
                    tg.cancel_scope.cancel()
                proxy.cut()
                proxy.resume()
                await zk.exists("/a")  # served: reconnected
                for p in ("/a", "/b"):
                    await zk.set(p, b"x")
                await zk.create("/b/x")
                await zk.create("/missing")
                await zk.set("/kept", b"x")
                await kept.wait(1)
                await _sentinel(zk, "/sentinel")
            assert [e for e in notes.events if e.path in ("/a", "/b", "/b/x", "/missing")] == []


async def test_many_concurrent_cancellations_leave_only_the_needed_watches(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    n = 30
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=namespace, session_timeout=10) as zk:
            for i in range(n):
                await zk.create(f"/n{i}")
            keepers = {i: Recorder() for i in range(0, n, 3)}
            for i, rec in keepers.items():
                await zk.get(f"/n{i}", watch=rec)
            notes = Notifications(zk)
            proxy.stall_replies()
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(functools.partial(zk.get, f"/n{i}", watch=_ignore))
                        tg.start_soon(functools.partial(zk.exists, f"/n{i}", watch=_ignore))
                        tg.start_soon(functools.partial(zk.children, f"/n{i}", watch=_ignore))
                    await anyio.sleep(0.5)
                    tg.cancel_scope.cancel()
                proxy.resume()
                server = {f"{namespace}/n{i}" for i in range(n) if i not in keepers}
                await _until_watched(zk_server, zk.session_id, server.isdisjoint, 5)
                for i in range(n):
                    await zk.set(f"/n{i}", b"x")
                    await zk.create(f"/n{i}/c")
                for rec in keepers.values():
                    await rec.wait(1)
                await _sentinel(zk, "/sentinel")
            fired = {e.path for e in notes.events} - {"/sentinel"}
            assert fired == {f"/n{i}" for i in keepers}
            assert all(
                e.type is EventType.NODE_DATA_CHANGED for e in notes.events if e.path != "/sentinel"
            )
