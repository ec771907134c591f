"""TreeCache against a real ZooKeeper: a deep subtree mirrored, events in order, a burst
coalesced per node, convergence after a cut connection, a lost session and a server-side expiry
(nodes deleted, re-created with other data, added meanwhile), the subtree root deleted and
re-created, no watch left behind when the block is left, and the same view as kazoo's TreeCache
of a tree kazoo writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from kazoo.client import KazooClient
from kazoo.recipe.cache import TreeCache as KazooTreeCache

from aiocoord import Client, Op, SessionState, TreeCache, TreeEvent, TreeEventType
from aiocoord.recipes._session import pipelined
from aiocoord.recipes.cache import coalesce
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from tests.helpers import eventually, eventually_async, wait_state
from tests.recipes.test_watchers import server_watches

TOP = "/tree"
ADDED, UPDATED, REMOVED = (
    TreeEventType.NODE_ADDED,
    TreeEventType.NODE_UPDATED,
    TreeEventType.NODE_REMOVED,
)

Tree = dict[str, tuple[bytes, int, int, list[str]]]  # path: data, czxid, mzxid, children


async def server_tree(zk: Client, top: str = TOP) -> Tree:
    """The subtree as the server has it (read without watches)."""
    tree: Tree = {}
    todo = [top]
    while todo:
        path = todo.pop()
        node = await zk.exists(path)
        if node is None:
            continue
        try:
            data, stat = await zk.get(path)
            kids = sorted(await zk.children(path))
        except Exception:  # changed under the walk: the caller asks again
            return {}
        tree[path] = (data, stat.czxid, stat.mzxid, kids)
        todo += [f"{path}/{k}" for k in kids]
    return tree


def mirrored(cache: TreeCache) -> Tree:
    tree: Tree = {}
    todo = [cache.path]
    while todo:
        path = todo.pop()
        node, kids = cache.get(path), cache.children(path)
        if node is None or kids is None:
            continue
        tree[path] = (node[0], node[1].czxid, node[1].mzxid, kids)
        todo += [f"{path}/{k}" for k in kids]
    return tree


async def converged(cache: TreeCache, zk: Client, timeout: float = 15) -> None:
    async def same() -> bool:
        await zk.sync(TOP)
        return mirrored(cache) == await server_tree(zk)

    await eventually_async(same, timeout)


async def events_until(cache: TreeCache, last: TreeEvent, timeout: float = 15) -> list[TreeEvent]:
    """The events up to the first equal to ``last`` (compared on type and path), bounded."""
    seen: list[TreeEvent] = []
    with anyio.fail_after(timeout):
        async for event in cache:
            seen.append(event)
            if (event.type, event.path) == (last.type, last.path):
                return seen
    raise AssertionError(f"the events ended before {last}: {seen}")


def kinds(events: list[TreeEvent]) -> list[tuple[str, str]]:
    return [(e.type.name, e.path) for e in events]


@asynccontextmanager
async def cache_through_a_proxy(
    zk_server: ZooKeeperServer, namespace: str, session_timeout: float
) -> AsyncIterator[tuple[TcpProxy, Client, TreeCache]]:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with (
            Client(proxy.address, namespace=namespace, session_timeout=session_timeout) as c,
            TreeCache(c, TOP) as cache,
        ):
            yield proxy, c, cache


def test_a_waiting_event_is_replaced_by_where_the_node_now_stands() -> None:
    def ev(kind: TreeEventType, data: bytes = b"") -> TreeEvent:
        return TreeEvent(kind, "/a", data)

    assert coalesce(None, ev(UPDATED, b"x")) == ev(UPDATED, b"x")
    assert coalesce(ev(ADDED, b"x"), ev(UPDATED, b"y")) == ev(ADDED, b"y")
    assert coalesce(ev(ADDED, b"x"), ev(REMOVED, b"x")) is None  # never seen: nothing to tell
    assert coalesce(ev(REMOVED, b"x"), ev(ADDED, b"y")) == ev(UPDATED, b"y")
    assert coalesce(ev(UPDATED, b"x"), ev(REMOVED, b"x")) == ev(REMOVED, b"x")
    assert coalesce(ev(UPDATED, b"x"), ev(UPDATED, b"y")) == ev(UPDATED, b"y")


async def test_a_deep_subtree_is_mirrored_with_its_events_in_order(zk: Client) -> None:
    await zk.create(f"{TOP}/a/b", b"b", makepath=True)
    async with TreeCache(zk, TOP) as cache:
        # filled before the block starts
        assert cache.children(TOP) == ["a"] and cache.get(f"{TOP}/a/b") is not None
        initial = await events_until(cache, TreeEvent(TreeEventType.INITIALIZED, TOP))
        assert kinds(initial) == [
            ("NODE_ADDED", TOP),
            ("NODE_ADDED", f"{TOP}/a"),
            ("NODE_ADDED", f"{TOP}/a/b"),
            ("INITIALIZED", TOP),
        ]
        deep = f"{TOP}/a/b/c/d/e"
        await zk.create(deep, b"deep", makepath=True)
        added = await events_until(cache, TreeEvent(ADDED, deep))
        assert kinds(added) == [
            ("NODE_ADDED", f"{TOP}/a/b/c"),
            ("NODE_ADDED", f"{TOP}/a/b/c/d"),
            ("NODE_ADDED", deep),
        ]
        assert added[-1].data == b"deep"
        await zk.set(deep, b"changed")
        (updated,) = await events_until(cache, TreeEvent(UPDATED, deep))
        node = cache.get(deep)
        assert updated.data == b"changed" and node is not None and node[0] == b"changed"
        await zk.delete(f"{TOP}/a/b/c", recursive=True)
        removed = await events_until(cache, TreeEvent(REMOVED, f"{TOP}/a/b/c"))
        # children before parents
        assert kinds(removed) == [
            ("NODE_REMOVED", deep),
            ("NODE_REMOVED", f"{TOP}/a/b/c/d"),
            ("NODE_REMOVED", f"{TOP}/a/b/c"),
        ]
        assert cache.get(deep) is None and cache.children(f"{TOP}/a/b") == []
        await converged(cache, zk)


async def test_a_reader_behind_gets_one_event_per_node_saying_where_it_stands(
    zk: Client,
) -> None:
    await zk.create(f"{TOP}/x", b"start", makepath=True)
    await zk.create(f"{TOP}/y", b"y")

    def data(path: str) -> bytes | None:
        node = cache.get(path)
        return None if node is None else node[0]

    async with TreeCache(zk, TOP) as cache:
        await events_until(cache, TreeEvent(TreeEventType.INITIALIZED, TOP))
        # the reader takes nothing meanwhile:
        await pipelined([lambda i=i: zk.set(f"{TOP}/x", b"%d" % i) for i in range(200)])  # type: ignore[misc]
        await eventually(lambda: data(f"{TOP}/x") == b"199", 15)
        await zk.create(f"{TOP}/brief")  # added, then removed: nothing to tell
        await eventually(lambda: data(f"{TOP}/brief") is not None, 15)
        await zk.delete(f"{TOP}/brief")
        await eventually(lambda: data(f"{TOP}/brief") is None, 15)
        await zk.delete(f"{TOP}/y")  # removed, then added: the node the reader has changed
        await eventually(lambda: data(f"{TOP}/y") is None, 15)
        await zk.create(f"{TOP}/y", b"again")
        await eventually(lambda: data(f"{TOP}/y") == b"again", 15)
        await zk.create(f"{TOP}/marker")
        seen = await events_until(cache, TreeEvent(ADDED, f"{TOP}/marker"))
        assert kinds(seen) == [
            ("NODE_UPDATED", f"{TOP}/x"),
            ("NODE_UPDATED", f"{TOP}/y"),
            ("NODE_ADDED", f"{TOP}/marker"),
        ]
        assert [e.data for e in seen[:2]] == [b"199", b"again"]


async def change_the_tree(zk: Client) -> None:
    """What another client does while the cache is away: deletes deep down, adds, updates, and
    deletes a node and creates it again with other data."""
    await zk.delete(f"{TOP}/a/b", recursive=True)
    await zk.create(f"{TOP}/n/m/o", b"new", makepath=True)
    await zk.set(f"{TOP}/a", b"a2")
    await zk.delete(f"{TOP}/r", recursive=True)
    await zk.create(f"{TOP}/r", b"other")
    await zk.create(f"{TOP}/r/fresh", b"")


async def make_tree(zk: Client) -> None:
    await zk.create(f"{TOP}/a/b/c", b"c", makepath=True)
    await zk.create(f"{TOP}/r/old", b"", makepath=True)


async def test_changes_made_while_the_connection_was_cut_converge(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await make_tree(zk)
    async with (
        cache_through_a_proxy(zk_server, namespace, 10) as (proxy, watcher, cache),
        watcher.session_events() as events,
    ):
        assert not cache.stale
        proxy.refuse()
        proxy.cut()
        await wait_state(events, SessionState.SUSPENDED, 10)
        assert cache.stale
        await change_the_tree(zk)
        proxy.accept()
        await wait_state(events, SessionState.RECONNECTED, 15)
        await converged(cache, zk)
        # the whole subtree was read again after the reconnect
        await eventually(lambda: not cache.stale, 15)
        r = cache.get(f"{TOP}/r")
        assert r is not None and r[0] == b"other" and cache.children(f"{TOP}/r") == ["fresh"]


async def test_changes_made_while_the_session_was_lost_converge(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await make_tree(zk)
    async with (
        cache_through_a_proxy(zk_server, namespace, 2) as (proxy, watcher, cache),
        watcher.session_events() as events,
    ):
        await events_until(cache, TreeEvent(TreeEventType.INITIALIZED, TOP))
        old_r = cache.get(f"{TOP}/r")
        proxy.refuse()
        proxy.cut()
        await change_the_tree(zk)
        await wait_state(events, SessionState.LOST, 15)
        assert cache.stale
        proxy.accept()
        await converged(cache, zk)
        await eventually(lambda: not cache.stale, 15)
        r = cache.get(f"{TOP}/r")
        assert old_r is not None and r is not None
        assert r[0] == b"other" and r[1].czxid > old_r[1].czxid
        seen = await events_until(cache, TreeEvent(ADDED, f"{TOP}/r/fresh"))
        assert kinds(seen) == [
            ("NODE_UPDATED", f"{TOP}/a"),
            ("NODE_REMOVED", f"{TOP}/a/b/c"),
            ("NODE_REMOVED", f"{TOP}/a/b"),
            ("NODE_ADDED", f"{TOP}/n"),
            ("NODE_ADDED", f"{TOP}/n/m"),
            ("NODE_ADDED", f"{TOP}/n/m/o"),
            ("NODE_REMOVED", f"{TOP}/r/old"),
            ("NODE_UPDATED", f"{TOP}/r"),  # removed and added again: one event for the reader
            ("NODE_ADDED", f"{TOP}/r/fresh"),
        ]
        # and it watches on the new session
        await zk.set(f"{TOP}/n/m/o", b"later")
        await eventually(lambda: (cache.get(f"{TOP}/n/m/o") or (b"",))[0] == b"later", 15)


async def test_server_side_expiry_then_the_mirror_converges(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await make_tree(zk)
    async with (
        Client(zk_server.hosts, namespace=namespace, session_timeout=4) as watcher,
        watcher.session_events() as events,
        TreeCache(watcher, TOP) as cache,
    ):
        await expire_session(watcher)
        await wait_state(events, SessionState.LOST, 15)
        await change_the_tree(zk)
        await converged(cache, zk)
        await eventually(lambda: not cache.stale, 15)


async def test_the_subtree_root_deleted_and_created_again(zk: Client) -> None:
    await make_tree(zk)
    async with TreeCache(zk, TOP) as cache:
        await events_until(cache, TreeEvent(TreeEventType.INITIALIZED, TOP))
        await zk.delete(TOP, recursive=True)
        removed = await events_until(cache, TreeEvent(REMOVED, TOP))
        assert len(removed) == 6 and all(e.type is REMOVED for e in removed)
        assert cache.get(TOP) is None and cache.children(TOP) is None
        await zk.create(f"{TOP}/again", b"x", makepath=True)
        added = await events_until(cache, TreeEvent(ADDED, f"{TOP}/again"))
        assert kinds(added) == [("NODE_ADDED", TOP), ("NODE_ADDED", f"{TOP}/again")]
        await converged(cache, zk)


async def test_a_cache_of_a_missing_path_waits_for_it(zk: Client) -> None:
    async with TreeCache(zk, TOP) as cache:
        assert cache.get(TOP) is None
        assert len(await events_until(cache, TreeEvent(TreeEventType.INITIALIZED, TOP))) == 1
        await zk.create(f"{TOP}/later", makepath=True)
        await events_until(cache, TreeEvent(ADDED, f"{TOP}/later"))
        await converged(cache, zk)


async def test_leaving_the_block_leaves_no_watch_behind(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await make_tree(zk)
    async with Client(zk_server.hosts, namespace=namespace, session_timeout=4) as watcher:
        started = anyio.Event()

        async def follow() -> None:
            async with TreeCache(watcher, TOP) as cache:
                started.set()
                async for _ in cache:  # waits: cancelled here
                    pass

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await started.wait()
                watched = await server_watches(zk_server, watcher.session_id)
                assert len(watched) == 6  # a data watch on every node
                tg.cancel_scope.cancel()
        assert not watcher._session.watches  # (the client's registry: children watches too)
        assert await server_watches(zk_server, watcher.session_id) == []
        # and the events end with the block
        async with TreeCache(watcher, TOP) as cache:
            pass
        with anyio.fail_after(5):
            assert len([e async for e in cache]) == 7  # what was queued, then the end


async def test_it_agrees_with_kazoos_tree_cache_on_a_tree_kazoo_writes(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    kazoo = KazooClient(hosts=zk_server.hosts + namespace)
    kazoo.start(timeout=10)
    theirs = KazooTreeCache(kazoo, TOP)
    try:
        await anyio.to_thread.run_sync(lambda: kazoo.ensure_path(f"{TOP}/k"))
        theirs.start()
        async with TreeCache(zk, TOP) as cache:

            def write() -> None:
                kazoo.create(f"{TOP}/k/a/b", b"ab", makepath=True)
                kazoo.set(f"{TOP}/k", b"k2")
                kazoo.create(f"{TOP}/z", b"z")
                kazoo.delete(f"{TOP}/k/a", recursive=True)
                kazoo.create(f"{TOP}/k/c", b"c")

            await anyio.to_thread.run_sync(write)
            await converged(cache, zk)

            def kazoos_view() -> Tree:
                view: Tree = {}
                todo = [TOP]
                while todo:
                    path = todo.pop()
                    node, kids = theirs.get_data(path), theirs.get_children(path)
                    if node is None or kids is None:
                        continue
                    view[path] = (node.data, node.stat.czxid, node.stat.mzxid, sorted(kids))
                    todo += [f"{path}/{k}" for k in kids]
                return view

            await eventually(lambda: kazoos_view() == mirrored(cache), 15)
    finally:
        theirs.close()
        kazoo.stop()
        kazoo.close()


async def test_a_parent_and_child_made_again_are_never_reported_removed_while_they_live(
    zk: Client,
) -> None:
    """/t/b and /t/b/a are deleted and made again in one multi(): the child's watch fires first.
    The new /t/b/a is never mirrored under the old /t/b, nor reported removed (it lives on)."""
    await zk.create("/t/b/a", b"old", makepath=True)
    events: list[tuple[TreeEventType, str, int]] = []
    async with TreeCache(zk, "/t") as cache:
        with anyio.fail_after(20):
            async for event in cache:
                if event.type is TreeEventType.INITIALIZED:
                    break
            await zk.multi(
                [
                    Op.delete("/t/b/a"),
                    Op.delete("/t/b"),
                    Op.create("/t/b", b"new"),
                    Op.create("/t/b/a", b"new"),
                ]
            )
            new_b, new_a = (await zk.get("/t/b"))[1].czxid, (await zk.get("/t/b/a"))[1].czxid
            async for event in cache:
                assert event.stat is not None
                events.append((event.type, event.path, event.stat.czxid))
                b, a = cache.get("/t/b"), cache.get("/t/b/a")
                if a is not None and a[1].czxid == new_a:
                    assert b is not None and b[1].czxid == new_b, events  # not the old parent
                    break
    # (the old /t/b's REMOVED and the new one's ADDED may reach a reader as one UPDATED)
    assert (TreeEventType.NODE_REMOVED, "/t/b/a", new_a) not in events
    assert events[0][:2] == (TreeEventType.NODE_REMOVED, "/t/b/a") and events[0][2] != new_a
    assert events[-1] == (TreeEventType.NODE_ADDED, "/t/b/a", new_a)
