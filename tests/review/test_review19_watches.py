"""Review 19: attacks on "a watching read cancelled while in flight leaves no watch on the server"
(``Session._finish``, ``Session._drop_abandoned``, ``Session.remove_server_watch``).

Two observations of the server's watches: ``wchc`` (data and persistent watches of a session),
and the notifications the server sends this client (``Notifications``): a watch left on the
server shows as a notification for a change nobody of ours waits for. Every negative check on
notifications is closed by a sentinel: a watched node changed *after* the change under test, whose
notification the server sends after any notification of the earlier change (one connection, in
order), so no fixed sleep is needed.
"""

from __future__ import annotations

import functools

import anyio
import pytest

from aiocoord import Client, EventType, RequestTimeout, WatchEvent, WatchMode
from aiocoord.testing import TcpProxy, ZooKeeperServer
from aiocoord.transport.jute import XID
from aiocoord.transport.watches import WatchKind
from tests.helpers import Recorder, eventually
from tests.transport.test_wire_rules import _watched_by


async def _until_watched(
    server: ZooKeeperServer, session_id: int, done, timeout: float
) -> set[str]:
    watched: set[str] = set()
    with anyio.move_on_after(timeout):
        while True:
            watched = await anyio.to_thread.run_sync(_watched_by, server, session_id)
            if done(watched):
                return watched
            await anyio.sleep(0.05)
    return watched


def _ignore(event: WatchEvent) -> None:
    pass


class Notifications:
    """Every watch notification the server sends the client (decoded by the session)."""

    def __init__(self, zk: Client) -> None:
        self.events: list[WatchEvent] = []
        session = zk._session
        original = session.frame_received

        def spy(conn, xid, frame):  # type: ignore[no-untyped-def]
            if xid == XID.NOTIFICATION:
                from aiocoord.transport import jute
                from aiocoord.transport.types import EventType as ET
                from aiocoord.transport.types import KeeperState

                etype, state, path = jute.WATCHER_EVENT.read(frame, jute.REPLY_HEAD.size)
                self.events.append(
                    WatchEvent(ET(etype), KeeperState(state), session.chroot.to_client(path))
                )
            return original(conn, xid, frame)

        session.frame_received = spy  # type: ignore[method-assign]

    def on(self, path: str) -> list[WatchEvent]:
        return [e for e in self.events if e.path == path]


async def _sentinel(zk: Client, path: str) -> None:
    """Change a watched node and wait for its event: every notification the server sent for an
    earlier change has then come."""
    rec = Recorder()
    if await zk.exists(path) is None:
        await zk.create(path)
    await zk.get(path, watch=rec)
    await zk.set(path, b"sentinel")
    await rec.wait(1, timeout=10)


async def test_a_watching_read_that_timed_out_leaves_no_watch_on_the_server(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    """The caller of a watching read gave up just as surely when its deadline ran out
    (RequestTimeout) as when it was cancelled: the server set the watch when it served the read,
    and nobody is registered for it. Its reply comes after the deadline; the server watch must be
    removed then, as for a cancelled read."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(
            proxy.address, namespace=namespace, session_timeout=10, request_timeout=1.0
        ) as zk:
            await zk.create("/data")
            notes = Notifications(zk)
            proxy.stall_replies()  # the read reaches the server (watch set), its reply is held
            with anyio.fail_after(10):
                with pytest.raises(RequestTimeout):
                    await zk.get("/data", watch=_ignore)
            server_path = f"{namespace}/data"
            assert server_path in await _until_watched(
                zk_server, zk.session_id, lambda w: server_path in w, 5
            )
            proxy.resume()  # the late reply comes (well within the read timeout)
            watched = await _until_watched(
                zk_server, zk.session_id, lambda w: server_path not in w, 5
            )
            assert server_path not in watched, "the timed-out read's watch stayed on the server"
            with anyio.fail_after(10):
                await zk.set("/data", b"changed")
                await _sentinel(zk, "/sentinel")
            assert notes.on("/data") == []


async def test_a_cancelled_persistent_watch_kept_for_a_one_shot_goes_once_that_fires(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    """add_watch(PERSISTENT) is cancelled in flight while a one-shot read on the same path relies
    on it (sent without a server watch of its own, being covered). The persistent server watch is
    rightly kept for the one-shot watcher; but once that one-shot watcher has fired nobody needs it,
    and it stays on the server for the rest of the connection, sending a notification for every
    change of the node: the cancelled add_watch left a watch on the server."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=namespace, session_timeout=10) as zk:
            await zk.create("/p")
            notes = Notifications(zk)
            one_shot = Recorder()
            proxy.stall_replies()
            server_path = f"{namespace}/p"
            adder = anyio.CancelScope()

            async def add() -> None:
                with adder:
                    await zk.add_watch("/p", _ignore, mode=WatchMode.PERSISTENT)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(add)
                    await eventually(
                        lambda: zk._session.watches.has(WatchKind.PERSISTENT, "/p"), timeout=5
                    )
                    # covered by the add_watch in flight: sent without a server watch
                    tg.start_soon(functools.partial(zk.get, "/p", watch=one_shot))
                    await _until_watched(zk_server, zk.session_id, lambda w: server_path in w, 5)
                    adder.cancel()  # the add_watch only
                    await anyio.sleep(0.1)
                    proxy.resume()
                await zk.set("/p", b"first")
                await one_shot.wait(1)
                await zk.set("/p", b"second")  # nobody of ours watches /p any more
                await _sentinel(zk, "/sentinel")
            assert [e.type for e in notes.on("/p")].count(EventType.NODE_DATA_CHANGED) == 1, (
                f"notifications for /p: {notes.on('/p')}"
            )
            watched = await _until_watched(
                zk_server, zk.session_id, lambda w: server_path not in w, 3
            )
            assert server_path not in watched


async def test_a_cancelled_recursive_watch_kept_for_another_watch_goes_with_it(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    """add_watch(PERSISTENT_RECURSIVE) on /r is cancelled in flight while a child watch of ours is
    on /r. ZooKeeper 3.8 cannot remove a recursive watch by its type (ZOOKEEPER-4472), and
    removing every watch on /r would take the child watch too: the recursive watch is kept while
    the child watch is there, and goes with it. (3.8 also drops the child watch when the recursive
    one is added on its path, a server bug of the ZOOKEEPER-4466 family: docs/guarantees.md.)"""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=namespace, session_timeout=10) as zk:
            await zk.create("/r")
            await zk.create("/r/x")
            kids = Recorder()
            await zk.children("/r", watch=kids)
            notes = Notifications(zk)
            server_path = f"{namespace}/r"
            proxy.stall_replies()
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        functools.partial(
                            zk.add_watch, "/r", _ignore, mode=WatchMode.PERSISTENT_RECURSIVE
                        )
                    )
                    await _until_watched(zk_server, zk.session_id, lambda w: server_path in w, 5)
                    tg.cancel_scope.cancel()
                proxy.resume()
                await zk.exists("/r")  # the add_watch's reply has come
                await eventually(
                    lambda: (WatchKind.RECURSIVE, "/r") in zk._session.watches._kept, timeout=5
                )
                await zk.remove_watch("/r", kids)  # the last other watch on /r goes
                watched = await _until_watched(
                    zk_server, zk.session_id, lambda w: server_path not in w, 5
                )
                assert server_path not in watched, "the kept recursive watch stayed"
                await zk.set("/r/x", b"changed")  # a data change in the subtree: no watch of ours
                await _sentinel(zk, "/sentinel")
            assert notes.on("/r/x") == []


async def test_a_removed_persistent_watch_kept_for_a_one_shot_goes_once_that_fires(
    zk: Client,
) -> None:
    """The same as the cancelled add_watch, through remove_watch (whose docstring promises the
    server's watch goes "once no other watcher, and no read in flight, needs it"): the persistent
    watch is kept for a one-shot watcher it covers, and stays after that watcher fired."""
    await zk.create("/p")
    persistent, one_shot = Recorder(), Recorder()
    await zk.add_watch("/p", persistent, mode=WatchMode.PERSISTENT)
    await zk.get("/p", watch=one_shot)  # covered: no server watch of its own
    with anyio.fail_after(10):
        await zk.remove_watch("/p", persistent)
    notes = Notifications(zk)
    with anyio.fail_after(10):
        await zk.set("/p", b"first")
        await one_shot.wait(1)
        await zk.set("/p", b"second")  # nobody of ours watches /p any more
        await _sentinel(zk, "/sentinel")
    assert len(notes.on("/p")) == 1, f"notifications for /p: {notes.on('/p')}"
    assert persistent.events == []
