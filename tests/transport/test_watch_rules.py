"""Persistent watches beside one-shot watches on ZooKeeper 3.8, whose server keeps one mode per
path and session (ZOOKEEPER-4466/4471/4472): each case here breaks on such a server unless the
client keeps one-shot watches off paths a persistent watch already serves."""

from __future__ import annotations

import anyio

from aiocoord import Client, EventType, WatchMode
from aiocoord.testing import ZooKeeperServer, four_letter_word
from tests.helpers import Recorder


async def test_a_one_shot_read_does_not_downgrade_a_persistent_watch(zk: Client) -> None:
    await zk.create("/p", b"0")
    persistent, one_shot = Recorder(), Recorder()
    await zk.add_watch("/p", persistent)
    await zk.get("/p", watch=one_shot)
    await zk.set("/p", b"1")
    await one_shot.wait(1)
    await persistent.wait(1)
    for i in range(2, 5):
        await zk.set("/p", str(i).encode())
    events = await persistent.wait(4)
    assert [e.type for e in events] == [EventType.NODE_DATA_CHANGED] * 4
    assert len(one_shot.events) == 1


async def test_removing_a_one_shot_watch_keeps_the_persistent_one(zk: Client) -> None:
    await zk.create("/p", b"0")
    persistent, children, exists = Recorder(), Recorder(), Recorder()
    await zk.add_watch("/p", persistent)
    await zk.children("/p", watch=children)
    await zk.exists("/p", watch=exists)
    await zk.remove_watch("/p", children)
    await zk.remove_watch("/p", exists)
    await zk.create("/p/c")
    await zk.set("/p", b"1")
    events = await persistent.wait(2)
    assert [e.type for e in events] == [
        EventType.NODE_CHILDREN_CHANGED,
        EventType.NODE_DATA_CHANGED,
    ]
    assert children.events == [] and exists.events == []


async def test_a_persistent_watch_is_removed_on_the_server(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    for mode in (WatchMode.PERSISTENT, WatchMode.PERSISTENT_RECURSIVE):
        await zk.create(f"/r{mode}", b"0")
        watcher = Recorder()
        await zk.add_watch(f"/r{mode}", watcher, mode=mode)
        await zk.remove_watch(f"/r{mode}", watcher)
        host, _, port = zk_server.hosts.rpartition(":")
        watched = four_letter_word(host, int(port), "wchc")
        assert f"{zk.namespace}/r{mode}" not in watched
        # a later watch fires; the removed one does not (ordered: both see the same change)
        later = Recorder()
        await zk.get(f"/r{mode}", watch=later)
        await zk.set(f"/r{mode}", b"1")
        await later.wait(1)
        assert watcher.events == []


async def test_one_shot_watches_keep_firing_after_their_persistent_watch_goes(
    zk: Client,
) -> None:
    # the persistent watch served the one-shot one; removing it must not leave it deaf
    await zk.create("/s", b"0")
    persistent, one_shot = Recorder(), Recorder()
    await zk.add_watch("/s", persistent)
    await zk.get("/s", watch=one_shot)
    await zk.remove_watch("/s", persistent)
    await zk.set("/s", b"1")
    with anyio.fail_after(5):
        await one_shot.wait(1)
    assert persistent.events == []
