"""Watches: typed events, one-shot and persistent, and what happens across a reconnect and an
expiry (restored from the true last zxid: nothing missed, nothing spurious; ended, not moved)."""

from __future__ import annotations

import pytest

from aiocoord import Client, EventType, KeeperState, NoWatcher, SessionState, WatchMode
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from tests.helpers import Recorder, holds, wait_state


async def settle(client: Client) -> None:
    """Every notification the server sent before this point has been delivered: notifications
    and replies share one ordered stream."""
    await client.sync("/")
    await client.exists("/")


@pytest.mark.both_loops
async def test_one_shot_watches_fire_once_with_typed_events(zk: Client) -> None:
    await zk.create("/n", b"1")
    await zk.create("/dir")
    data_w, exist_w, child_w, gone_w = Recorder(), Recorder(), Recorder(), Recorder()
    await zk.get("/n", watch=data_w)
    assert await zk.exists("/later", watch=exist_w) is None
    await zk.children("/dir", watch=child_w)
    await zk.exists("/n", watch=gone_w)
    await zk.set("/n", b"2")
    await zk.set("/n", b"3")  # the watch is spent: no second event
    await zk.create("/later")
    await zk.create("/dir/kid")
    await settle(zk)
    assert [(e.type, e.path) for e in await data_w.wait()] == [(EventType.NODE_DATA_CHANGED, "/n")]
    assert [(e.type, e.path) for e in await exist_w.wait()] == [(EventType.NODE_CREATED, "/later")]
    assert [(e.type, e.path) for e in await child_w.wait()] == [
        (EventType.NODE_CHILDREN_CHANGED, "/dir")
    ]
    assert [e.type for e in gone_w.events] == [EventType.NODE_DATA_CHANGED]
    assert all(e.state is KeeperState.SYNC_CONNECTED for e in data_w.events)


async def test_delete_fires_data_and_child_watches(zk: Client) -> None:
    await zk.create("/d")
    data_w, child_w = Recorder(), Recorder()
    await zk.get("/d", watch=data_w)
    await zk.children("/d", watch=child_w)
    await zk.delete("/d")
    assert [e.type for e in await data_w.wait()] == [EventType.NODE_DELETED]
    assert [e.type for e in await child_w.wait()] == [EventType.NODE_DELETED]


async def test_persistent_and_recursive_watches_stay_until_removed(zk: Client) -> None:
    node_w, tree_w = Recorder(), Recorder()
    for root, watcher, mode in (
        ("/p", node_w, WatchMode.PERSISTENT),
        ("/t", tree_w, WatchMode.PERSISTENT_RECURSIVE),
    ):
        await zk.create(root)
        await zk.add_watch(root, watcher, mode=mode)
        await zk.set(root, b"1")
        await zk.set(root, b"2")
        await zk.create(f"{root}/c", b"")
        await zk.create(f"{root}/c/g", b"")
        await zk.set(f"{root}/c/g", b"x")
    await settle(zk)
    assert [e.type for e in await node_w.wait(3)] == [
        EventType.NODE_DATA_CHANGED,
        EventType.NODE_DATA_CHANGED,
        EventType.NODE_CHILDREN_CHANGED,
    ]
    assert [(e.type, e.path) for e in await tree_w.wait(5)] == [
        (EventType.NODE_DATA_CHANGED, "/t"),
        (EventType.NODE_DATA_CHANGED, "/t"),
        (EventType.NODE_CREATED, "/t/c"),
        (EventType.NODE_CREATED, "/t/c/g"),
        (EventType.NODE_DATA_CHANGED, "/t/c/g"),
    ]
    await zk.remove_watch("/p", node_w)
    await zk.remove_watch("/t", tree_w)
    await zk.set("/p", b"3")
    await zk.set("/t/c", b"3")
    await settle(zk)
    assert len(node_w.events) == 3 and len(tree_w.events) == 5
    with pytest.raises(NoWatcher):
        await zk.remove_watch("/p", node_w)


async def test_watches_across_a_reconnect_miss_nothing_and_invent_nothing(
    zk_server: ZooKeeperServer, proxy: TcpProxy, namespace: str
) -> None:
    async with (
        Client(zk_server.hosts, namespace=namespace) as writer,
        Client(proxy.address, namespace=namespace, session_timeout=10) as zk,
        zk.session_events() as feed,
    ):
        for path in ("/changed", "/unchanged", "/kids", "/kids-unchanged"):
            await writer.create(path)
        changed, unchanged, created, kids, kids_same, persistent = (Recorder() for _ in range(6))
        await zk.get("/changed", watch=changed)
        await zk.get("/unchanged", watch=unchanged)
        await zk.exists("/created", watch=created)
        await zk.children("/kids", watch=kids)
        await zk.children("/kids-unchanged", watch=kids_same)
        await zk.add_watch("/unchanged", persistent)
        # unrelated writes move the server's zxid past every watch: a client restoring from
        # zxid 0 (aiozk) would see all of them fire
        await zk.create("/noise")
        session = zk.session_id

        proxy.refuse()
        proxy.cut()
        await wait_state(feed, SessionState.SUSPENDED, 5)
        await writer.set("/changed", b"new")
        await writer.create("/created")
        await writer.create("/kids/k")
        proxy.accept()
        await wait_state(feed, SessionState.RECONNECTED, 10)
        assert zk.session_id == session
        await settle(zk)
        await writer.set("/unchanged", b"after")  # after the reconnect: the persistent watch
        await settle(zk)
        assert [e.type for e in await changed.wait()] == [EventType.NODE_DATA_CHANGED]
        assert [e.type for e in await created.wait()] == [EventType.NODE_CREATED]
        assert [e.type for e in await kids.wait()] == [EventType.NODE_CHILDREN_CHANGED]
        assert [e.type for e in await persistent.wait()] == [EventType.NODE_DATA_CHANGED]
        # the one-shot watch on /unchanged fires for the write after the reconnect, only once
        assert [e.type for e in await unchanged.wait()] == [EventType.NODE_DATA_CHANGED]
        assert kids_same.events == []


async def test_watches_end_with_the_session_and_are_not_moved(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with (
        Client(zk_server.hosts, namespace=namespace) as writer,
        Client(zk_server.hosts, namespace=namespace, session_timeout=4) as zk,
        zk.session_events() as feed,
    ):
        await writer.create("/w")
        one_shot, persistent = Recorder(), Recorder()
        await zk.get("/w", watch=one_shot)
        await zk.add_watch("/w", persistent)
        await expire_session(zk)
        seen = await wait_state(feed, SessionState.CONNECTED, 15)
        assert SessionState.LOST in seen
        for rec in (one_shot, persistent):
            (event,) = await rec.wait()
            assert event.state is KeeperState.EXPIRED and event.type is EventType.NONE
            assert event.path == "/w"
        await writer.set("/w", b"after")
        await settle(zk)
        await holds(lambda: len(one_shot.events) == 1 and len(persistent.events) == 1)
