"""Wire rules of the client, pinned against a real ZooKeeper server.

Each test fails when its rule is broken in ``aiocoord/transport/client.py``:

- an idle session stays connected: the client pings (the server would expire it otherwise);
- the request size limit sits exactly at the server's ``jute.maxbuffer``: a frame of
  ``MAX_PACKET`` bytes after its length prefix is served, one byte more is refused unsent;
- after a reconnect, SetWatches goes out in chunks, so more than 1 MiB of watched paths survives;
- ``remove_watch`` removes the watch on the server (``wchc``), unless another watcher needs it;
  so does a watching read whose caller gave up before its reply;
- pipelined replies go to their own requests.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import anyio
import pytest

from aiocoord import (
    MAX_PACKET,
    Client,
    Op,
    PayloadTooLarge,
    SessionEvent,
    SessionState,
    WatchEvent,
    WatchMode,
)
from aiocoord.testing import TcpProxy, ZooKeeperServer, four_letter_word
from tests.helpers import Recorder, wait_state

# -- pings ------------------------------------------------------------------------------------

#: short, so three session timeouts of idleness fit in a few seconds
PING_SESSION_TIMEOUT = 2.0


async def test_idle_session_stays_connected_for_three_session_timeouts(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with (
        Client(zk_server.hosts, namespace=namespace, session_timeout=PING_SESSION_TIMEOUT) as zk,
        zk.session_events() as feed,
    ):
        assert zk.negotiated_timeout == PING_SESSION_TIMEOUT
        session = zk.session_id
        seen: list[SessionEvent] = []
        # the window is the property: without pings the read timeout (2/3 of the session
        # timeout) or the server's expiry would show up in it
        with anyio.move_on_after(3 * zk.negotiated_timeout):
            async for event in feed:
                seen.append(event)
        assert seen == []
        assert zk.state is SessionState.CONNECTED
        assert zk.session_id == session
        with anyio.fail_after(2):
            assert await zk.exists("/") is not None


# -- the request size limit -------------------------------------------------------------------
# A request frame after its 4-byte length prefix: xid and opcode (8 bytes), then the record.
# jute strings and buffers are a 4-byte length and the bytes. The server drops the connection
# when that frame is longer than jute.maxbuffer (MAX_PACKET).


def _largest_set_data(server_path: str) -> int:
    # SetDataRequest: path, data, version (4)
    return MAX_PACKET - 8 - (4 + len(server_path.encode())) - 4 - 4


def _largest_create_data(server_path: str) -> int:
    # CreateRequest: path, data, acl vector (4 + one world:anyone ACL: perms 4, "world" 4 + 5,
    # "anyone" 4 + 6), flags (4)
    return MAX_PACKET - 8 - (4 + len(server_path.encode())) - 4 - (4 + 23) - 4


async def _refused_unsent(zk: Client, request: Callable[[], Awaitable[object]]) -> None:
    """``request()`` raises PayloadTooLarge and nothing reached the server: had the frame been
    sent, the server would have dropped the connection before answering the read after it."""
    events: list[SessionEvent] = []
    zk.add_listener(events.append)
    try:
        with pytest.raises(PayloadTooLarge):
            await request()
        with anyio.fail_after(5):
            await zk.exists("/")
    finally:
        zk.remove_listener(events.append)
    assert events == []
    assert zk.state is SessionState.CONNECTED


async def test_set_data_at_the_packet_limit_is_served_one_byte_more_is_refused(
    zk: Client,
) -> None:
    await zk.create("/big")
    size = _largest_set_data(f"{zk.namespace}/big")
    with anyio.fail_after(10):
        stat = await zk.set("/big", b"s" * size)
    assert stat.data_length == size
    await _refused_unsent(zk, lambda: zk.set("/big", b"s" * (size + 1)))
    with anyio.fail_after(10):
        assert (await zk.get("/big"))[1].data_length == size
        await zk.delete("/big")


async def test_create_at_the_packet_limit_is_served_one_byte_more_is_refused(
    zk: Client,
) -> None:
    size = _largest_create_data(f"{zk.namespace}/big")
    with anyio.fail_after(10):
        await zk.create("/big", b"c" * size)
        assert (await zk.get("/big"))[1].data_length == size
        await zk.delete("/big")
    await _refused_unsent(zk, lambda: zk.create("/big", b"c" * (size + 1)))
    with anyio.fail_after(5):
        assert await zk.exists("/big") is None


# -- SetWatches on reconnect ------------------------------------------------------------------

#: enough watched paths (with the namespace, over 1.1 MB) that one SetWatches frame could not
#: carry them past jute.maxbuffer
WATCHED_NODES = 1100
NAME_LENGTH = 1000


async def test_set_watches_past_the_packet_limit_is_chunked(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    names = [f"/{i:04d}{'w' * (NAME_LENGTH - 4)}" for i in range(WATCHED_NODES)]
    assert sum(4 + len(namespace + name) for name in names) > MAX_PACKET
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with (
            Client(proxy.address, namespace=namespace, session_timeout=20) as zk,
            zk.session_events() as feed,
        ):
            watcher = Recorder()
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for start in range(0, WATCHED_NODES, 200):
                        tg.start_soon(zk.multi, [Op.create(n) for n in names[start : start + 200]])
                async with anyio.create_task_group() as tg:
                    for name in names:
                        tg.start_soon(functools.partial(zk.get, name, watch=watcher))
            session = zk.session_id
            proxy.cut()
            await wait_state(feed, SessionState.SUSPENDED, 5)
            await wait_state(feed, SessionState.RECONNECTED, 10)
            later: list[SessionEvent] = []
            zk.add_listener(later.append)
            # the first, a middle and the last path: in the first, a middle and the last chunk
            changed = [names[0], names[WATCHED_NODES // 2], names[-1]]
            with anyio.fail_after(10):
                for name in changed:
                    await zk.set(name, b"changed")
            events = await watcher.wait(len(changed), timeout=10)
            assert sorted(e.path for e in events) == sorted(changed)
            with anyio.fail_after(5):
                assert await zk.exists(names[1]) is not None
            assert later == []
            assert zk.session_id == session


# -- remove_watch on the server ---------------------------------------------------------------


def _watched_by(server: ZooKeeperServer, session_id: int) -> set[str]:
    """The paths the server watches for ``session_id``, from ``wchc``."""
    host, _, port = server.hosts.rpartition(":")
    paths: set[str] = set()
    session: int | None = None
    for line in four_letter_word(host, int(port), "wchc").splitlines():
        if line.startswith("0x"):
            session = int(line, 16)
        elif line.strip() and session == session_id:
            paths.add(line.strip())
    return paths


def _ignore(event: WatchEvent) -> None:
    pass


async def test_remove_watch_removes_the_watch_on_the_server(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    # wchc lists data watches (one-shot and persistent) only: child watches do not show there
    await zk.create("/data")
    await zk.create("/kept")
    await zk.get("/data", watch=_ignore)
    await zk.exists("/missing", watch=_ignore)
    await zk.add_watch("/kept", _ignore, mode=WatchMode.PERSISTENT)
    paths = {f"{zk.namespace}{p}" for p in ("/data", "/missing", "/kept")}
    assert paths <= await anyio.to_thread.run_sync(_watched_by, zk_server, zk.session_id)
    with anyio.fail_after(5):
        for path in ("/data", "/missing", "/kept"):
            await zk.remove_watch(path, _ignore)
    watched = await anyio.to_thread.run_sync(_watched_by, zk_server, zk.session_id)
    assert not paths & watched


async def test_server_watch_stays_while_another_watcher_needs_it(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    await zk.create("/w")
    await zk.create("/p")
    first, second = Recorder(), Recorder()
    # get and exists share the server's one data watch on /w; two persistent watchers share /p
    await zk.get("/w", watch=first)
    await zk.exists("/w", watch=second)
    await zk.add_watch("/p", first, mode=WatchMode.PERSISTENT)
    await zk.add_watch("/p", second, mode=WatchMode.PERSISTENT)
    with anyio.fail_after(5):
        await zk.remove_watch("/w", first)
        await zk.remove_watch("/p", first)
    paths = {f"{zk.namespace}/w", f"{zk.namespace}/p"}
    assert paths <= await anyio.to_thread.run_sync(_watched_by, zk_server, zk.session_id)
    with anyio.fail_after(5):
        await zk.set("/w", b"changed")
        await zk.set("/p", b"changed")
    events = await second.wait(2)
    assert sorted(e.path for e in events) == ["/p", "/w"]
    assert first.events == []


async def _until_watched(
    server: ZooKeeperServer, session_id: int, done: Callable[[set[str]], bool], timeout: float
) -> set[str]:
    with anyio.fail_after(timeout):
        while True:
            watched = await anyio.to_thread.run_sync(_watched_by, server, session_id)
            if done(watched):
                return watched
            await anyio.sleep(0.05)


async def test_a_watching_read_given_up_in_flight_leaves_no_watch_on_the_server(
    zk_server: ZooKeeperServer, proxy: TcpProxy, namespace: str
) -> None:
    # the replies come after their callers gave up: the server has set watches nobody registered
    async with Client(proxy.address, namespace=namespace) as zk:
        await zk.create("/data")
        await zk.create("/kept")
        kept = Recorder()
        await zk.get("/kept", watch=kept)  # a watcher of ours: its server watch must stay
        given_up = {f"{namespace}{p}" for p in ("/data", "/missing", "/persistent")}
        proxy.stall_replies()
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(zk.get, "/data", watch=_ignore))
            tg.start_soon(functools.partial(zk.exists, "/missing", watch=_ignore))
            tg.start_soon(functools.partial(zk.get, "/kept", watch=_ignore))
            tg.start_soon(
                functools.partial(zk.add_watch, "/persistent", _ignore, mode=WatchMode.PERSISTENT)
            )
            # the server has them all (wchc: data and persistent watches) before the cancel
            await _until_watched(zk_server, zk.session_id, given_up.__le__, 5)
            tg.cancel_scope.cancel()
        proxy.resume()
        watched = await _until_watched(zk_server, zk.session_id, given_up.isdisjoint, 5)
        assert f"{namespace}/kept" in watched
        with anyio.fail_after(5):
            await zk.set("/kept", b"changed")
        assert [e.path for e in await kept.wait(1)] == ["/kept"]


# -- replies matched to requests --------------------------------------------------------------

PIPELINED = 200


def _data(i: int) -> bytes:
    return f"node-{i}:".encode() * (i % 7 + 1)


async def test_pipelined_gets_each_get_their_own_node_data(zk: Client) -> None:
    with anyio.fail_after(10):
        await zk.multi([Op.create(f"/n{i}", _data(i)) for i in range(PIPELINED)])
    results: dict[int, bytes] = {}

    async def read(i: int) -> None:
        results[i] = (await zk.get(f"/n{i}"))[0]

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(PIPELINED):
                tg.start_soon(read, i)
    assert results == {i: _data(i) for i in range(PIPELINED)}


async def test_pipelined_exists_and_children_each_get_their_own_node(zk: Client) -> None:
    count = 20
    ops = [Op.create(f"/p{i}", _data(i)) for i in range(count)]
    ops += [Op.create(f"/p{i}/c{j}") for i in range(count) for j in range(i)]
    with anyio.fail_after(10):
        await zk.multi(ops)
    kids: dict[int, list[str]] = {}
    sizes: dict[int, tuple[int, int]] = {}

    async def read(i: int) -> None:
        stat = await zk.exists(f"/p{i}")
        assert stat is not None
        sizes[i] = (stat.data_length, stat.num_children)

    async def list_children(i: int) -> None:
        kids[i] = sorted(await zk.children(f"/p{i}"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(read, i)
                tg.start_soon(list_children, i)
    assert sizes == {i: (len(_data(i)), i) for i in range(count)}
    assert kids == {i: sorted(f"c{j}" for j in range(i)) for i in range(count)}
