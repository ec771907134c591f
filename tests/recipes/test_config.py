"""Config store and watches against a real ZooKeeper: versions, idempotency, pruning, ordering
under a burst, watchers through a cut connection and a lost session, and a kazoo script that
reads the same history."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from kazoo.client import KazooClient

from aiocoord import (
    Client,
    ConfigFeed,
    ConfigStore,
    ConfigVersion,
    HostStatus,
    NoNode,
    SessionFeed,
    SessionState,
    StatusBoard,
    watch_node,
)
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session, four_letter_word
from tests.helpers import eventually, wait_state

PATH = "/Applications/NginxConf"


@asynccontextmanager
async def watching_through_a_proxy(
    zk_server: ZooKeeperServer, namespace: str
) -> AsyncIterator[tuple[TcpProxy, Client, ConfigFeed, SessionFeed]]:
    """A watcher of PATH on a session of its own, behind a proxy that the test cuts."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with (
            Client(proxy.address, namespace=namespace, session_timeout=10) as watcher,
            ConfigStore(watcher, PATH).watch() as feed,
            watcher.session_events() as events,
        ):
            yield proxy, watcher, feed, events


async def test_publish_current_history_rollback(zk: Client) -> None:
    store = ConfigStore(zk, PATH)
    assert await store.current() is None
    names = [await store.publish(f"v{i}".encode()) for i in range(3)]
    assert names == ["conf-0000000000", "conf-0000000001", "conf-0000000002"]
    current = await store.current()
    assert current is not None and (current.name, current.data) == ("conf-0000000002", b"v2")
    assert [v.data for v in await store.history()] == [b"v0", b"v1", b"v2"]
    assert (await store.get(1)).data == b"v1"
    assert (await store.get("conf-0000000001")).number == 1

    rolled = await store.rollback(0)
    assert rolled == "conf-0000000003"
    current = await store.current()
    assert current is not None and current.data == b"v0"
    # the history path holds only conf- children (older scripts take the largest name)
    assert sorted(await zk.children(PATH)) == [f"conf-000000000{i}" for i in range(4)]

    with pytest.raises(NoNode):
        await store.get(99)
    with pytest.raises(ValueError, match="not a version name"):
        await store.get("latest")


async def test_same_idempotency_key_makes_one_version(zk: Client) -> None:
    store = ConfigStore(zk, PATH)
    first = await store.publish(b"a", key="deploy-42")
    again = await store.publish(b"a", key="deploy-42")
    other = await store.publish(b"b", key="deploy-43")
    assert first == again == "conf-0000000000"
    assert other == "conf-0000000001"
    assert [v.data for v in await store.history()] == [b"a", b"b"]


async def test_old_versions_are_pruned_beyond_retention_by_the_publishes(zk: Client) -> None:
    store = ConfigStore(zk, PATH, retention=20)  # pruned after every second publish
    with anyio.fail_after(30):
        for i in range(47):
            await store.publish(f"v{i}".encode(), key=f"k{i}")
        # nobody calls prune(): the last publish (conf-0000000046) pruned before it returned
        history = await store.history()
        keys = await zk.children(f"{PATH}-keys")
    assert [v.data for v in history] == [f"v{i}".encode() for i in range(27, 47)]
    assert len(keys) <= 2 * store.retention  # the keys go once there are twice as many


async def _follow(feed: ConfigFeed, seen: list[ConfigVersion], last: str) -> None:
    async for version in feed:
        seen.append(version)
        if version.name == last:
            return


async def test_burst_of_1000_publishes_every_watcher_in_order_ends_on_newest(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    store = ConfigStore(zk, PATH)
    published = {await store.publish(b"start"): b"start"}
    watchers = 4
    seen: list[list[ConfigVersion]] = [[] for _ in range(watchers)]
    async with Client(zk_server.hosts, namespace=namespace) as watch_client:
        last = "conf-0000001000"
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(watchers):
                    # two watchers on their own sessions, two sharing one
                    client = watch_client if i < 2 else zk

                    async def follow(i: int = i, client: Client = client) -> None:
                        async with ConfigStore(client, PATH).watch() as feed:
                            await _follow(feed, seen[i], last)

                    tg.start_soon(follow)

                async def publish(start: int) -> None:
                    for n in range(start, 1000, 4):
                        data = f"burst {n}".encode()
                        published[await store.publish(data)] = data

                for start in range(4):
                    tg.start_soon(publish, start)
    assert len(published) == 1001
    for versions in seen:
        # (ZooKeeper's order within a session and the feed's own guard both keep this; the guard
        # alone is tested by test_a_watcher_never_repeats_a_version_nor_goes_back)
        zxids = [v.zxid for v in versions]
        assert zxids == sorted(set(zxids)), "a watcher went backwards or repeated a version"
        # each version with its own bytes (read by its name, pruned or not since)
        assert all(published[v.name] == v.data for v in versions)
        assert versions[-1].name == last
    assert len(await store.history()) == 100  # the default retention


async def test_a_watcher_never_repeats_a_version_nor_goes_back(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """A watcher re-reads after a reconnect: first it finds the version it yielded (nothing
    changed), then an older one (the newest was deleted while it was away). It yields neither:
    the next version it yields is the next one published."""
    store = ConfigStore(zk, PATH)
    await store.publish(b"one")
    await store.publish(b"two")
    async with watching_through_a_proxy(zk_server, namespace) as (proxy, _, feed, events):
        with anyio.fail_after(10):
            assert (await feed.__anext__()).data == b"two"

        async def take(got: list[ConfigVersion]) -> None:
            got.append(await feed.__anext__())

        for away, then in ((None, b"three"), ("conf-0000000002", b"four")):
            got: list[ConfigVersion] = []
            with anyio.fail_after(40):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(take, got)
                    proxy.refuse()
                    proxy.cut()
                    await wait_state(events, SessionState.SUSPENDED, 10)
                    await eventually(lambda: feed.stale, 10)
                    if away is not None:
                        await zk.delete(f"{PATH}/{away}")  # "three": "two" is the newest
                    proxy.accept()
                    await eventually(lambda: not feed.stale, 15)  # it has re-read
                    await store.publish(then)  # (take() ends with the version it yields)
            assert [v.data for v in got] == [then]


async def test_watcher_sees_changes_made_while_its_connection_was_cut(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    store = ConfigStore(zk, PATH)
    await store.publish(b"one")
    async with watching_through_a_proxy(zk_server, namespace) as (proxy, watcher, feed, events):
        with anyio.fail_after(10):
            assert (await feed.__anext__()).data == b"one"
        assert not feed.stale
        proxy.refuse()
        proxy.cut()
        await wait_state(events, SessionState.SUSPENDED, 10)
        assert feed.stale
        await store.publish(b"two")
        await store.publish(b"three")
        proxy.accept()
        with anyio.fail_after(15):
            version = await feed.__anext__()
        assert version.data == b"three"
        assert not feed.stale
        assert watcher.state is SessionState.RECONNECTED


async def test_single_node_watcher_survives_session_loss_and_a_recreated_node(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    node = "/app/business/config"
    await zk.create(node, b'{"commitId": "a"}', makepath=True)
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with (
            Client(proxy.address, namespace=namespace, session_timeout=2) as watcher,
            watch_node(watcher, node) as feed,
            watcher.session_events() as events,
        ):
            with anyio.fail_after(10):
                first = await feed.__anext__()
            assert first.data == b'{"commitId": "a"}'
            proxy.refuse()
            proxy.cut()
            # while it is away: deleted, and created again with other data
            await zk.delete(node)
            await zk.create(node, b'{"commitId": "b"}')
            await wait_state(events, SessionState.LOST, 15)
            assert feed.stale
            proxy.accept()
            with anyio.fail_after(15):
                second = await feed.__anext__()
            assert second.data == b'{"commitId": "b"}'
            assert second.zxid > first.zxid
            assert not feed.stale
            # and it watches on the new session
            await zk.set(node, b'{"commitId": "c"}')
            with anyio.fail_after(10):
                assert (await feed.__anext__()).data == b'{"commitId": "c"}'


async def test_history_watcher_after_server_side_session_expiry(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    store = ConfigStore(zk, PATH)
    await store.publish(b"before")
    async with (
        Client(zk_server.hosts, namespace=namespace, session_timeout=4) as watcher,
        ConfigStore(watcher, PATH).watch() as feed,
        watcher.session_events() as events,
    ):
        with anyio.fail_after(10):
            assert (await feed.__anext__()).data == b"before"
        await expire_session(watcher)
        await wait_state(events, SessionState.LOST, 15)
        await store.publish(b"after expiry")
        with anyio.fail_after(15):
            assert (await feed.__anext__()).data == b"after expiry"
        await store.publish(b"later")
        with anyio.fail_after(10):
            assert (await feed.__anext__()).data == b"later"


async def test_status_board_shows_each_hosts_version(zk: Client) -> None:
    store = ConfigStore(zk, PATH)
    await store.status.report("web-1", "conf-0000000003", ok=True)
    await store.status.report("web-2", "conf-0000000002", ok=False, error="nginx -t failed")
    await store.status.report("web-1", "conf-0000000004", ok=True)
    statuses = {s.host: s for s in await store.status.read()}
    assert statuses["web-1"].version == "conf-0000000004" and statuses["web-1"].ok
    assert statuses["web-2"].error == "nginx -t failed" and not statuses["web-2"].ok
    stat = await zk.exists(f"{PATH}-status/web-1")
    assert stat is not None and stat.ephemeral_owner == zk.session_id
    with pytest.raises(ValueError, match="bad host id"):
        await store.status.report("a/b", None, ok=True)


async def test_kazoo_children_watch_sees_versions_published_by_aiocoord(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    store = ConfigStore(zk, PATH)
    await store.publish(b"first")
    kazoo = KazooClient(hosts=zk_server.hosts + namespace)
    kazoo.start(timeout=10)
    newest: list[bytes] = []
    changed = threading.Event()
    try:

        def on_children(children: list[str]) -> None:
            # what the older scripts do: the largest child name is the newest version
            if children:
                data, _ = kazoo.get(f"{PATH}/{max(children)}")
                newest.append(data)
                changed.set()

        kazoo.ChildrenWatch(PATH, on_children)
        for text in (b"second", b"third"):
            await store.publish(text)
        await eventually(lambda: bool(newest) and newest[-1] == b"third", 10)
        assert newest[0] == b"first"
    finally:
        kazoo.stop()
        kazoo.close()


async def test_wait_applied_counts_hosts_on_the_version_or_a_newer_one(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    store = ConfigStore(zk, PATH)
    board = store.status
    await board.report("web-1", "conf-0000000001", ok=True)
    async with Client(zk_server.hosts, namespace=zk.namespace) as waiter_zk:
        waiting = ConfigStore(waiter_zk, PATH).status
        done: list[HostStatus] = []

        async def wait() -> None:
            done.extend(await waiting.wait_applied("conf-0000000002", 2))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await board.report("web-1", "conf-0000000002", ok=True)
                await board.report("web-2", "conf-0000000002", ok=False, error="nginx -t failed")
                await settle_watches(zk, waiter_zk)
                assert not done  # a failed apply is not applied
                await board.report("web-2", "conf-0000000003", ok=True)  # a newer one counts
        assert [(s.host, s.version) for s in done] == [
            ("web-1", "conf-0000000002"),
            ("web-2", "conf-0000000003"),
        ]
        statuses = await board.read()
        assert [s.host for s in StatusBoard.behind(statuses, "conf-0000000004")] == [
            "web-1",
            "web-2",
        ]
        # nothing left watched by the waiter, returned or cancelled
        assert not watched_by(zk_server, waiter_zk)
        with anyio.move_on_after(0.5):
            await waiting.wait_applied("conf-0000000009", 1)
        assert not watched_by(zk_server, waiter_zk)


async def test_wait_applied_reads_again_after_its_session_was_lost(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    board = ConfigStore(zk, PATH).status
    async with Client(zk_server.hosts, namespace=zk.namespace, session_timeout=4) as waiter_zk:
        waiting = ConfigStore(waiter_zk, PATH).status
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiting.wait_applied, "conf-0000000001", 1)
                await settle_watches(zk, waiter_zk)
                await expire_session(waiter_zk)  # its watches go with the session
                await waiter_zk.wait_connected()
                await board.report("web-1", "conf-0000000001", ok=True)


async def settle_watches(*clients: Client) -> None:
    """Every read of these clients sent so far is answered (their watches are set)."""
    for client in clients:
        await client.sync("/")
        await client.exists("/")


def watched_by(server: ZooKeeperServer, client: Client) -> list[str]:
    """The paths the server watches for ``client``'s session."""
    session = f"0x{client.session_id:x}"
    host, port = server.hosts.split(":")
    out, path = [], ""
    for line in four_letter_word(host, int(port), "wchp").splitlines():
        if line.startswith("/"):
            path = line.strip()
        elif line.strip() == session:
            out.append(path)
    return out
