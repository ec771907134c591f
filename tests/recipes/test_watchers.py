"""DataWatch and ChildrenWatch against a real ZooKeeper: states in order, latest wins under a
burst, changes made while the connection was cut, a node deleted and re-created while the
session was lost, server-side expiry, and no watch left on the server after cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from aiocoord import ChildrenWatch, Client, DataWatch, SessionState
from aiocoord.recipes._session import pipelined
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session, four_letter_word
from tests.helpers import eventually, wait_state

NODE = "/w/node"


async def take(watch: DataWatch | ChildrenWatch, timeout: float = 15) -> object:
    with anyio.fail_after(timeout):
        return await anext(watch)


def data_of(state: object) -> bytes | None:
    assert state is None or isinstance(state, tuple)
    return None if state is None else state[0]


async def server_watches(zk_server: ZooKeeperServer, session_id: int) -> list[str]:
    """The paths the server watches for ``session_id`` (the ``wchc`` four-letter word)."""
    host, _, port = zk_server.hosts.rpartition(":")
    text = await anyio.to_thread.run_sync(four_letter_word, host, int(port), "wchc")
    paths: list[str] = []
    mine = False
    for line in text.splitlines():
        if line.startswith("0x"):
            mine = int(line, 16) == session_id
        elif mine and line.strip():
            paths.append(line.strip())
    return paths


@asynccontextmanager
async def proxied(
    zk_server: ZooKeeperServer, namespace: str, session_timeout: float
) -> AsyncIterator[tuple[TcpProxy, Client]]:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(
            proxy.address, namespace=namespace, session_timeout=session_timeout
        ) as client:
            yield proxy, client


async def test_data_watch_yields_each_state_and_none_while_missing(zk: Client) -> None:
    async with DataWatch(zk, NODE) as watch:
        assert await take(watch) is None
        assert not watch.stale
        await zk.create(NODE, b"a", makepath=True)
        first = await take(watch)
        assert data_of(first) == b"a"
        await zk.set(NODE, b"b")
        assert data_of(await take(watch)) == b"b"
        await zk.delete(NODE)
        assert await take(watch) is None
        await zk.create(NODE, b"b")  # the same data again: a new node, a new state
        again = await take(watch)
        assert isinstance(first, tuple) and isinstance(again, tuple)
        assert again[0] == b"b" and again[1].czxid > first[1].czxid


async def test_children_watch_yields_sorted_children_across_a_recreated_parent(
    zk: Client,
) -> None:
    async with ChildrenWatch(zk, "/w/parent") as watch:
        assert await take(watch) == []
        await zk.create("/w/parent/b", makepath=True)
        assert await take(watch) == ["b"]
        await zk.create("/w/parent/a")
        assert await take(watch) == ["a", "b"]
        await zk.delete("/w/parent", recursive=True)
        assert await take(watch) == []
        await zk.create("/w/parent/c", makepath=True)  # watched on after its re-creation
        assert await take(watch) == ["c"]


async def test_a_burst_yields_the_newest_state_once(zk: Client) -> None:
    await zk.create(NODE, b"start", makepath=True)
    async with DataWatch(zk, NODE) as data, ChildrenWatch(zk, "/w") as kids:
        assert data_of(await take(data)) == b"start"
        assert await take(kids) == ["node"]
        await pipelined([lambda i=i: zk.set(NODE, b"%d" % i) for i in range(200)])  # type: ignore[misc]
        await pipelined([lambda i=i: zk.create(f"/w/c{i:03}") for i in range(50)])  # type: ignore[misc]
        assert data_of(await take(data)) == b"199"  # not 0, 1, ...
        assert await take(kids) == sorted(["node", *(f"c{i:03}" for i in range(50))])
        # nothing in between is owed: the next state is the next change
        await zk.set(NODE, b"final")
        assert data_of(await take(data)) == b"final"


async def test_reconnect_rereads_and_clears_stale(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create(NODE, b"a", makepath=True)
    async with (
        proxied(zk_server, namespace, 10) as (proxy, watcher),
        watcher.session_events() as events,
        DataWatch(watcher, NODE) as watch,
        anyio.create_task_group() as tg,
    ):
        seen: list[bytes | None] = []

        async def follow() -> None:
            async for state in watch:
                seen.append(data_of(state))

        tg.start_soon(follow)
        await eventually(lambda: seen == [b"a"] and not watch.stale, 10)
        proxy.refuse()
        proxy.cut()
        await wait_state(events, SessionState.SUSPENDED, 10)
        assert watch.stale
        proxy.accept()
        await wait_state(events, SessionState.RECONNECTED, 15)
        # nothing changed: no state is yielded, but the view was checked
        await eventually(lambda: not watch.stale, 10)
        assert seen == [b"a"]
        # changed while cut: deleted and created again with other data
        proxy.refuse()
        proxy.cut()
        await wait_state(events, SessionState.SUSPENDED, 10)
        await zk.delete(NODE)
        await zk.create(NODE, b"b")
        proxy.accept()
        await eventually(lambda: seen[-1:] == [b"b"] and not watch.stale, 15)
        tg.cancel_scope.cancel()


async def test_a_node_deleted_and_recreated_while_the_session_was_lost_is_seen(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create(NODE, b"a", makepath=True)
    async with (
        proxied(zk_server, namespace, 2) as (proxy, watcher),
        watcher.session_events() as events,
        DataWatch(watcher, NODE) as data,
        ChildrenWatch(watcher, "/w") as kids,
    ):
        assert data_of(await take(data)) == b"a"
        assert await take(kids) == ["node"]
        proxy.refuse()
        proxy.cut()
        await zk.delete(NODE)
        await zk.create(NODE, b"b")
        await zk.create("/w/other")
        await wait_state(events, SessionState.LOST, 15)
        assert data.stale and kids.stale
        proxy.accept()
        assert data_of(await take(data)) == b"b"
        assert await take(kids) == ["node", "other"]
        assert not data.stale
        # and they watch on the new session
        await zk.set(NODE, b"c")
        assert data_of(await take(data)) == b"c"


async def test_server_side_expiry_rewatches_on_the_new_session(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create(NODE, b"a", makepath=True)
    async with (
        Client(zk_server.hosts, namespace=namespace, session_timeout=4) as watcher,
        watcher.session_events() as events,
        DataWatch(watcher, NODE) as data,
        ChildrenWatch(watcher, "/w") as kids,
    ):
        assert data_of(await take(data)) == b"a"
        assert await take(kids) == ["node"]
        await expire_session(watcher)
        await wait_state(events, SessionState.LOST, 15)
        await zk.set(NODE, b"after expiry")
        await zk.create("/w/new")
        assert data_of(await take(data)) == b"after expiry"
        assert await take(kids) == ["new", "node"]


@pytest.mark.parametrize(
    ("kind", "path"),
    [(DataWatch, NODE), (ChildrenWatch, NODE), (ChildrenWatch, "/w/missing")],
)
async def test_cancelling_leaves_no_watch_behind(
    zk_server: ZooKeeperServer,
    namespace: str,
    zk: Client,
    kind: type[DataWatch | ChildrenWatch],
    path: str,
) -> None:
    await zk.create(NODE, b"a", makepath=True)
    async with Client(zk_server.hosts, namespace=namespace, session_timeout=4) as watcher:
        started = anyio.Event()

        async def follow() -> None:
            async with kind(watcher, path) as watch:
                await anext(watch)
                started.set()
                await anext(watch)  # waits: cancelled here

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await started.wait()
                assert watcher._session.watches  # (the client's registry)
                # wchc lists data and exists watches only (not children watches)
                data_watched = kind is DataWatch or path != NODE
                expected = [namespace + path] if data_watched else []
                assert await server_watches(zk_server, watcher.session_id) == expected
                tg.cancel_scope.cancel()
        assert not watcher._session.watches
        assert await server_watches(zk_server, watcher.session_id) == []
