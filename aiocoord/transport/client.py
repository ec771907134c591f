"""The ZooKeeper session: aiocoord's own non-blocking client.

One ``Client`` holds one session over one connection at a time. Requests are pipelined (matched by
xid; the server answers in order), their bytes coalesced into one write per loop turn, and no task
or timer is made per request: one ticker per client sends pings, notices a silent server (read
timeout at 2/3 of the negotiated timeout, pings at 1/3), enforces request deadlines and the
client-side session timeout while disconnected.

Session states (``SessionState``): CONNECTED (a new session) -> SUSPENDED (connection lost; the
session may live) -> RECONNECTED (same session id; watches restored with SetWatches from the last
zxid seen, so nothing is missed and nothing fires twice) or LOST (the server said the session
expired, or the negotiated timeout ran out while suspended: every watch ends with an EXPIRED
event, every queued request fails with SessionExpired; the client then opens a new session and
reports CONNECTED) -> CLOSED.

Requests made while SUSPENDED wait for the reconnect (up to their deadline). Requests in flight
when the connection dies: reads are sent again after the reconnect; writes fail with
``ConnectionLoss`` (they may or may not have been applied: the caller decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Any, Final, Self

import anyio

from . import jute
from .connection import Connection
from .errors import (
    ClientClosed,
    ConnectError,
    ConnectionLoss,
    CoordError,
    MarshallingError,
    MultiFailed,
    NodeExists,
    NoNode,
    NoWatcher,
    PayloadTooLarge,
    ProtocolError,
    RequestTimeout,
    RolledBack,
    SessionExpired,
    ZooKeeperError,
    error_for_code,
)
from .jute import OP, XID
from .paths import Chroot, parent, validate_path
from .types import (
    ACL,
    OPEN_ACL_UNSAFE,
    CheckResult,
    CreateResult,
    DeleteResult,
    EventType,
    KeeperState,
    Op,
    OpResult,
    SessionEvent,
    SessionState,
    SetDataResult,
    WatchEvent,
    WatchMode,
    ZnodeStat,
)

__all__ = ["MAX_PACKET", "Client", "SessionFeed", "Watcher", "parse_hosts"]

log = logging.getLogger("aiocoord.transport")

#: A watch callback. It runs on the event loop's I/O path: it must not block (set an event,
#: put into a queue). Exceptions are logged and swallowed.
Watcher = Callable[[WatchEvent], object]

#: The server's default jute.maxbuffer: a request frame larger than this is dropped by the server
#: together with the connection, so it is refused before it is sent.
MAX_PACKET: Final = 0xFFFFF
_SET_WATCHES_CHUNK: Final = 128 * 1024
_NO_PASSWD: Final = bytes(16)
_RETRYABLE_OPS: Final = frozenset(
    {
        OP.EXISTS,
        OP.GET_DATA,
        OP.GET_CHILDREN,
        OP.GET_CHILDREN2,
        OP.GET_ACL,
        OP.SYNC,
        OP.GET_EPHEMERALS,
        OP.GET_ALL_CHILDREN_NUMBER,
        OP.WHO_AM_I,
        OP.ADD_WATCH,
    }
)
# watch registries (client-side), by what the server calls them
_DATA, _EXIST, _CHILD, _PERSISTENT, _RECURSIVE = range(5)
# RemoveWatches types (WatcherType)
_REMOVE_TYPE: Final = {_CHILD: 1, _DATA: 2, _EXIST: 2, _PERSISTENT: 4, _RECURSIVE: 5}


def parse_hosts(hosts: str | Sequence[str]) -> tuple[list[tuple[str, int]], str | None]:
    """``"h1:2181,h2:2182/chroot"`` -> ([("h1", 2181), ("h2", 2182)], "/chroot")."""
    chroot: str | None = None
    if isinstance(hosts, str):
        text = hosts.strip()
        slash = text.find("/")
        if slash >= 0:
            text, chroot = text[:slash], text[slash:]
        items = [h for h in text.split(",") if h.strip()]
    else:
        items = list(hosts)
    out: list[tuple[str, int]] = []
    for item in items:
        item = item.strip()
        if item.startswith("["):  # [::1]:2181
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":") or "2181"
        elif item.count(":") == 1:
            host, port_text = item.split(":")
        else:
            host, port_text = item, "2181"
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"bad port in ZooKeeper host {item!r}") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"bad ZooKeeper host {item!r}")
        out.append((host, port))
    if not out:
        raise ValueError("no ZooKeeper hosts given")
    return out, chroot


class _Request:
    __slots__ = ("body", "deadline", "decode", "future", "opcode", "path", "watch", "xid")

    def __init__(
        self,
        opcode: int,
        body: bytes | bytearray,
        future: asyncio.Future[Any],
        deadline: float,
        path: str | None,
        decode: Callable[[bytes, int], Any],
        watch: tuple[int, str, Watcher] | None,
    ) -> None:
        self.opcode = opcode
        self.body = body
        self.future = future
        self.deadline = deadline
        self.path = path
        self.decode = decode
        self.watch = watch
        self.xid = 0


class SessionFeed:
    """Session state changes as an async iterator (from ``Client.session_events()``).

    Bounded: if a reader falls more than ``maxlen`` events behind, the oldest are dropped.
    """

    def __init__(self, maxlen: int = 64) -> None:
        self._events: deque[SessionEvent] = deque(maxlen=maxlen)
        self._wakeup = asyncio.Event()
        self._closed = False

    def _push(self, event: SessionEvent) -> None:
        self._events.append(event)
        self._wakeup.set()

    def _close(self) -> None:
        self._closed = True
        self._wakeup.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionEvent:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._events.popleft()


class Client:
    """A ZooKeeper session. Use as an async context manager; construction does no I/O.

    ``async with Client("127.0.0.1:2181", namespace="/app") as zk:`` returns once the session is
    established, or raises ``ConnectError`` naming every host after ``connect_timeout``.
    ``session_timeout`` is requested (the server bounds it); ``request_timeout`` bounds every
    request (default: the session timeout). The namespace is created on first connect.
    """

    def __init__(
        self,
        hosts: str | Sequence[str],
        *,
        namespace: str | None = None,
        session_timeout: float = 10.0,
        connect_timeout: float | None = None,
        request_timeout: float | None = None,
        auth: Iterable[tuple[str, str | bytes]] = (),
        default_acl: Sequence[ACL] = OPEN_ACL_UNSAFE,
        shuffle_hosts: bool = True,
        read_only: bool = False,
    ) -> None:
        self._hosts, chroot = parse_hosts(hosts)
        if namespace is not None and chroot is not None:
            raise ValueError("give the namespace either in the host string or as namespace=")
        self._chroot = Chroot(namespace if namespace is not None else chroot)
        if session_timeout <= 0:
            raise ValueError("session_timeout must be positive")
        self._requested_timeout = session_timeout
        self._timeout = session_timeout  # negotiated, once connected
        self._connect_timeout = connect_timeout if connect_timeout is not None else session_timeout
        self._request_timeout = request_timeout
        self._auth: list[tuple[str, bytes]] = [
            (scheme, cred.encode() if isinstance(cred, str) else cred) for scheme, cred in auth
        ]
        self._default_acl = tuple(default_acl)
        self._shuffle = shuffle_hosts
        self._read_only = read_only

        self._state = SessionState.CLOSED
        self._opened = False
        self._closing = False
        self._session_id = 0
        self._passwd = _NO_PASSWD
        self._last_zxid = 0
        self._xid = 0
        self._conn: Connection | None = None
        self._backlog: deque[_Request] = deque()
        self._auth_waiters: deque[asyncio.Future[None] | None] = deque()
        self._watches: tuple[dict[str, dict[Watcher, None]], ...] = tuple({} for _ in range(5))
        self._feeds: set[SessionFeed] = set()
        self._listeners: dict[Callable[[SessionEvent], object], None] = {}
        self._lost_at = 0.0
        self._last_errors: dict[str, str] = {}
        self._avoid_host: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: asyncio.Event | None = None
        self._ticker: asyncio.TimerHandle | None = None
        # The connection loop is one task owned by the client and always awaited by aclose().
        # Not an anyio task group: a Client may be entered and exited in different tasks
        # (pytest-asyncio fixtures do that), which a task group's cancel scope cannot survive.
        self._runner: asyncio.Task[None] | None = None

    # -- properties ------------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def session_id(self) -> int:
        return self._session_id

    @property
    def session_password(self) -> bytes:
        return self._passwd

    @property
    def negotiated_timeout(self) -> float:
        """The session timeout the server granted, in seconds."""
        return self._timeout

    @property
    def connected_host(self) -> str | None:
        conn = self._conn
        return conn.host if conn is not None and conn.active else None

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(f"{h}:{p}" for h, p in self._hosts)

    @property
    def namespace(self) -> str:
        return self._chroot.prefix or "/"

    @property
    def last_zxid(self) -> int:
        return self._last_zxid

    def __repr__(self) -> str:
        return (
            f"<Client {','.join(self.hosts)}{self._chroot.prefix} {self._state.value}"
            f" session=0x{self._session_id:x}>"
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._opened:
            raise RuntimeError("a Client is entered only once")
        self._opened = True
        self._loop = asyncio.get_running_loop()
        self._live = asyncio.Event()
        self._state = SessionState.SUSPENDED  # not yet connected: requests would wait
        self._runner = self._loop.create_task(self._run(), name=f"aiocoord {self.hosts}")
        self._runner.add_done_callback(self._runner_done)
        self._schedule_tick()
        try:
            with anyio.fail_after(self._connect_timeout):
                await self._live.wait()
        except TimeoutError:
            errors = "; ".join(f"{h}: {e}" for h, e in self._last_errors.items()) or "no answer"
            await self._shutdown()
            raise ConnectError(
                f"could not connect to ZooKeeper at {','.join(self.hosts)} within "
                f"{self._connect_timeout:g}s ({errors})",
                self.hosts,
            ) from None
        except BaseException:
            await self._shutdown()
            raise
        if self._closing:
            raise ClientClosed("the client closed while connecting")
        if self._chroot.prefix:
            await self._ensure_namespace()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session (its ephemeral nodes go at once). Never hangs: bounded, shielded."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        with anyio.CancelScope(shield=True):
            conn = self._conn
            if conn is not None and conn.active and not conn.dead:
                fut = self._send_now(conn, OP.CLOSE, b"", None, jute.REPLIES[OP.CLOSE].read)
                with anyio.move_on_after(min(2.0, self._timeout / 3)):
                    with suppress(CoordError):
                        await fut
                log.info("session 0x%x closed", self._session_id)
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._fail_all(ClientClosed("the client is closed"))  # in flight too: before the close
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._end_watches(KeeperState.CLOSED)
        self._set_state(SessionState.CLOSED)
        for feed in self._feeds:
            feed._close()
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await asyncio.wait([runner])

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closing:
            return
        exc = task.exception()
        log.critical("the session loop of %r died", self, exc_info=exc)
        self._closing = True
        if self._conn is not None:
            self._conn.fail("session loop died")
        self._fail_all(ClientClosed(f"the session loop died: {exc!r}"))
        self._end_watches(KeeperState.CLOSED)
        self._set_state(SessionState.CLOSED)

    async def wait_connected(self) -> None:
        """Wait until the session is connected (CONNECTED or RECONNECTED)."""
        if self._closing or self._live is None:
            raise ClientClosed("the client is closed" if self._closing else "not open")
        await self._live.wait()
        if self._closing:
            raise ClientClosed("the client is closed")

    def add_listener(self, listener: Callable[[SessionEvent], object]) -> None:
        """Call ``listener(event)`` on every session state change, on the event loop's I/O path:
        it must not block (cancel a scope, set an event). For a stream, use session_events()."""
        self._listeners[listener] = None

    def remove_listener(self, listener: Callable[[SessionEvent], object]) -> None:
        self._listeners.pop(listener, None)

    @asynccontextmanager
    async def session_events(self, maxlen: int = 64) -> AsyncIterator[SessionFeed]:
        """``async with zk.session_events() as feed: async for event in feed: ...``"""
        feed = SessionFeed(maxlen)
        if self._state is SessionState.CLOSED and self._closing:
            feed._close()
        self._feeds.add(feed)
        try:
            yield feed
        finally:
            self._feeds.discard(feed)

    # -- the connection loop ---------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.05
        while not self._closing:
            order = list(self._hosts)
            if self._shuffle:
                random.shuffle(order)
            if self._avoid_host is not None and len(order) > 1:
                # try the others first after losing a host
                order.sort(key=lambda hp: f"{hp[0]}:{hp[1]}" == self._avoid_host)
            served = False
            for host, port in order:
                if self._closing:
                    return
                try:
                    conn = await self._handshake(host, port)
                except _Expired:
                    served = True  # start again at once, with a new session
                    break
                except (OSError, TimeoutError, ProtocolError) as exc:
                    name = f"{host}:{port}"
                    self._last_errors[name] = str(exc) or type(exc).__name__
                    log.debug("connect to %s failed: %s", name, self._last_errors[name])
                    continue
                served = True
                self._last_errors.clear()
                await self._serve(conn)
                break
            if served:
                backoff = 0.05
                continue
            # every host failed: back off, with jitter, not past the session's deadline
            delay = backoff * random.uniform(0.5, 1.5)
            if self._state is SessionState.SUSPENDED and self._session_id:
                assert self._loop is not None
                delay = max(0.0, min(delay, self._lost_at - self._loop.time()))
            await anyio.sleep(delay)
            backoff = min(backoff * 2, 1.0)

    async def _handshake(self, host: str, port: int) -> Connection:
        loop = self._loop
        assert loop is not None
        name = f"{host}:{port}"
        conn = Connection(self, name, loop)
        attempt_timeout = max(0.5, self._requested_timeout / len(self._hosts))
        session_id = self._session_id
        try:
            with anyio.fail_after(attempt_timeout):
                await loop.create_connection(lambda: conn, host, port)
                conn.write_raw(
                    jute.encode_connect(
                        self._last_zxid,
                        int(self._requested_timeout * 1000),
                        session_id,
                        self._passwd,
                        self._read_only,
                    )
                )
                frame = await conn.handshake
        except BaseException:
            conn.fail("handshake did not complete")
            raise
        timeout_ms, new_id, passwd, _read_only = jute.decode_connected(frame)
        if timeout_ms <= 0:
            conn.fail("session expired")
            log.warning("session 0x%x expired (the server says so on reconnect)", session_id)
            self._lose("the server says the session expired")
            raise _Expired
        if session_id != self._session_id:
            # the session was declared LOST while this handshake was under way: do not revive it
            conn.fail("session was declared lost during the handshake")
            raise _Expired
        reconnect = session_id != 0 and new_id == session_id
        self._session_id, self._passwd = new_id, passwd
        self._timeout = timeout_ms / 1000
        self._conn = conn
        conn.activate()
        for scheme, cred in self._auth:
            self._auth_waiters.append(None)
            conn.write_request(XID.AUTH, OP.AUTH, self._encode(OP.AUTH, 0, scheme, cred))
        if reconnect:
            self._restore_watches(conn)
        backlog, self._backlog = self._backlog, deque()
        for req in backlog:
            if not req.future.done():
                self._send(conn, req)
        if reconnect:
            log.info("session 0x%x reconnected to %s", new_id, name)
            self._set_state(SessionState.RECONNECTED, name)
        else:
            log.info(
                "session 0x%x established with %s (timeout %.1fs)", new_id, name, self._timeout
            )
            self._set_state(SessionState.CONNECTED, name)
        return conn

    async def _serve(self, conn: Connection) -> None:
        # the connection's death is reported through connection_lost(); this only waits for it
        await conn.gone.wait()

    def _restore_watches(self, conn: Connection) -> None:
        data, exist, child, persistent, recursive = (
            [self._chroot.to_server(p) for p in reg] for reg in self._watches
        )
        if not (data or exist or child or persistent or recursive):
            return
        opcode = OP.SET_WATCHES2 if persistent or recursive else OP.SET_WATCHES
        lists = [data, exist, child, persistent, recursive]
        chunk: list[list[str]] = [[] for _ in lists]
        size = 0
        for i, paths in enumerate(lists):
            for path in paths:
                chunk[i].append(path)
                size += len(path) + 4
                if size >= _SET_WATCHES_CHUNK:
                    self._send_set_watches(conn, opcode, chunk)
                    chunk, size = [[] for _ in lists], 0
        if size:
            self._send_set_watches(conn, opcode, chunk)
        log.debug("restored watches from zxid 0x%x", self._last_zxid)

    def _send_set_watches(self, conn: Connection, opcode: int, chunk: list[list[str]]) -> None:
        fields = chunk if opcode == OP.SET_WATCHES2 else chunk[:3]
        conn.write_request(XID.SET_WATCHES, opcode, self._encode(opcode, self._last_zxid, *fields))

    # -- events from the connection --------------------------------------------------------
    def connection_lost(self, conn: Connection, reason: str) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        if self._closing:
            return
        self._avoid_host = conn.host
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for req in conn.pending.values():
            if req.future.done():
                continue
            if req.opcode in _RETRYABLE_OPS and req.deadline > now:
                self._backlog.append(req)  # sent again after the reconnect
            else:
                req.future.set_exception(
                    ConnectionLoss(f"connection to {conn.host} lost ({reason})", req.path)
                )
        conn.pending.clear()
        while self._auth_waiters:
            waiter = self._auth_waiters.popleft()
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionLoss(f"connection lost ({reason})"))
        if self._state.live:
            self._lost_at = now + self._timeout
            log.warning(
                "session 0x%x suspended: %s: %s (lost in %.1fs unless reconnected)",
                self._session_id,
                conn.host,
                reason,
                self._timeout,
            )
            self._set_state(SessionState.SUSPENDED, conn.host)

    def frame_received(self, conn: Connection, frame: bytes) -> None:
        xid, zxid, err = jute.REPLY_HEAD.unpack_from(frame, 0)
        if xid > 0:
            req = conn.pending.pop(xid, None)
            if zxid > 0:
                self._last_zxid = zxid
            if req is None:
                return  # its deadline ran out before the reply came
            self._complete(req, frame, err)
        elif xid == XID.NOTIFICATION:
            try:
                etype, state, path = jute.WATCHER_EVENT.read(frame, jute.REPLY_HEAD.size)
                event = WatchEvent(
                    EventType(etype), KeeperState(state), self._chroot.to_client(path)
                )
            except (ValueError, ProtocolError) as exc:
                log.error("undecodable watch event from %s: %s", conn.host, exc)
                return
            self._dispatch(event)
        elif xid == XID.PING:
            pass
        elif xid == XID.AUTH:
            waiter = self._auth_waiters.popleft() if self._auth_waiters else None
            if err:
                log.error("authentication rejected by %s: %s", conn.host, error_for_code(err))
            if waiter is not None and not waiter.done():
                if err:
                    waiter.set_exception(error_for_code(err))
                else:
                    waiter.set_result(None)
        elif xid == XID.SET_WATCHES:
            if err:
                log.error("SetWatches rejected by %s: %s", conn.host, error_for_code(err))
        else:
            log.warning("reply with unexpected xid %d from %s", xid, conn.host)

    def _complete(self, req: _Request, frame: bytes, err: int) -> None:
        fut = req.future
        if fut.done():
            return  # the caller gave up (cancelled)
        watch = req.watch
        if err:
            if err == NoNode.code and req.opcode == OP.EXISTS:
                if watch is not None:
                    self._register(_EXIST, watch[1], watch[2])
                fut.set_result(None)
            else:
                fut.set_exception(error_for_code(err, req.path))
            return
        try:
            result = req.decode(frame, jute.REPLY_HEAD.size)
        except CoordError as exc:
            fut.set_exception(exc)
            return
        if watch is not None:
            self._register(watch[0], watch[1], watch[2])
        fut.set_result(result)

    # -- watches ---------------------------------------------------------------------------
    def _register(self, kind: int, path: str, watcher: Watcher) -> None:
        self._watches[kind].setdefault(path, {})[watcher] = None

    def _dispatch(self, event: WatchEvent) -> None:
        path, etype = event.path, event.type
        data, exist, child, persistent, recursive = self._watches
        fire: dict[Watcher, None] = {}
        if etype in (EventType.NODE_DATA_CHANGED, EventType.NODE_CREATED):
            fire.update(data.pop(path, {}))
            fire.update(exist.pop(path, {}))
        elif etype == EventType.NODE_CHILDREN_CHANGED:
            fire.update(child.pop(path, {}))
        elif etype == EventType.NODE_DELETED:
            fire.update(data.pop(path, {}))
            fire.update(exist.pop(path, {}))
            fire.update(child.pop(path, {}))
        if persistent:
            fire.update(persistent.get(path, {}))
        if recursive and etype != EventType.NODE_CHILDREN_CHANGED:
            node = path
            while True:
                fire.update(recursive.get(node, {}))
                if node == "/":
                    break
                node = parent(node)
        for watcher in fire:
            _call_watcher(watcher, event)

    def _end_watches(self, state: KeeperState) -> None:
        """The session is gone: every watch ends with one event, and none survives."""
        registries = self._watches
        ended: dict[Watcher, list[str]] = {}
        for reg in registries:
            for path, watchers in reg.items():
                for w in watchers:
                    ended.setdefault(w, []).append(path)
            reg.clear()
        for watcher, paths in ended.items():
            for path in dict.fromkeys(paths):
                _call_watcher(watcher, WatchEvent(EventType.NONE, state, path))

    # -- state -----------------------------------------------------------------------------
    def _set_state(self, state: SessionState, host: str | None = None) -> None:
        self._state = state
        assert self._live is not None
        if state.live:
            self._live.set()
        elif state is SessionState.CLOSED:
            self._live.set()  # wake waiters so they see CLOSED
        else:
            self._live.clear()
        self._announce(SessionEvent(state, self._session_id, host))

    def _announce(self, event: SessionEvent) -> None:
        for feed in list(self._feeds):
            feed._push(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("session listener %r failed on %s", listener, event)

    def _lose(self, reason: str) -> None:
        old = self._session_id
        log.warning("session 0x%x lost: %s", old, reason)
        self._session_id, self._passwd = 0, _NO_PASSWD
        self._fail_all(SessionExpired(f"session 0x{old:x} expired ({reason})"))
        self._end_watches(KeeperState.EXPIRED)
        self._state = SessionState.LOST
        assert self._live is not None
        self._live.clear()
        self._announce(SessionEvent(SessionState.LOST, old, None))

    def _fail_all(self, exc: CoordError) -> None:
        pending: list[_Request] = list(self._backlog)
        self._backlog.clear()
        if self._conn is not None:
            pending.extend(self._conn.pending.values())
            self._conn.pending.clear()
        for req in pending:
            if not req.future.done():
                req.future.set_exception(exc)
        while self._auth_waiters:
            waiter = self._auth_waiters.popleft()
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)

    # -- the ticker: pings, read timeout, deadlines, client-side expiry -------------------------
    def _schedule_tick(self) -> None:
        assert self._loop is not None
        interval = max(0.02, min(0.5, self._timeout / 10))
        self._ticker = self._loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        conn = self._conn
        if conn is not None and conn.active and not conn.dead:
            silent = now - conn.last_recv
            if silent > self._timeout * 2 / 3:
                conn.fail(f"no reply for {silent:.1f}s (read timeout)")
            elif now - conn.last_send >= self._timeout / 3:
                conn.write_request(XID.PING, OP.PING, b"")
        elif self._state is SessionState.SUSPENDED and self._session_id and now >= self._lost_at:
            self._lose(f"no reconnect within the session timeout ({self._timeout:.1f}s)")
        self._expire_requests(now)
        if not self._closing:
            self._schedule_tick()

    def _expire_requests(self, now: float) -> None:
        backlog = self._backlog
        if backlog:
            keep: deque[_Request] = deque()
            for req in backlog:
                if req.future.done():
                    continue
                if req.deadline <= now:
                    req.future.set_exception(
                        RequestTimeout("no connection to ZooKeeper before the deadline", req.path)
                    )
                else:
                    keep.append(req)
            self._backlog = keep
        conn = self._conn
        if conn is not None and conn.pending:
            pending = conn.pending
            for xid in list(pending):
                req = pending[xid]
                if req.deadline > now:
                    break  # replies come in order; so do deadlines, nearly
                del pending[xid]
                if not req.future.done():
                    req.future.set_exception(
                        RequestTimeout("the server did not answer before the deadline", req.path)
                    )

    # -- sending ---------------------------------------------------------------------------
    def _next_xid(self) -> int:
        xid = self._xid + 1
        if xid >= 0x7FFFFFFF:
            xid = 1
        self._xid = xid
        return xid

    @staticmethod
    def _encode(opcode: int, *fields: Any) -> bytearray:
        body = bytearray()
        jute.REQUESTS[opcode].write(body, *fields)
        if len(body) + 8 > MAX_PACKET:
            raise PayloadTooLarge(
                f"request of {len(body) + 8} bytes exceeds the server's limit of"
                f" {MAX_PACKET} bytes (jute.maxbuffer)"
            )
        return body

    def _send(self, conn: Connection, req: _Request) -> None:
        xid = self._next_xid()
        req.xid = xid
        conn.pending[xid] = req
        conn.write_request(xid, req.opcode, req.body)

    def _send_now(
        self,
        conn: Connection,
        opcode: int,
        body: bytes | bytearray,
        path: str | None,
        decode: Callable[[bytes, int], Any],
    ) -> asyncio.Future[Any]:
        assert self._loop is not None
        fut = self._loop.create_future()
        req = _Request(opcode, body, fut, self._loop.time() + 2.0, path, decode, None)
        self._send(conn, req)
        return fut

    def _submit(
        self,
        opcode: int,
        body: bytes | bytearray,
        path: str | None,
        decode: Callable[[bytes, int], Any] | None = None,
        watch: tuple[int, str, Watcher] | None = None,
    ) -> asyncio.Future[Any]:
        if self._closing or not self._opened:
            raise ClientClosed(
                "the client is closed" if self._closing else "the client is not open"
            )
        loop = self._loop
        assert loop is not None
        fut = loop.create_future()
        timeout = self._request_timeout if self._request_timeout is not None else self._timeout
        req = _Request(
            opcode,
            body,
            fut,
            loop.time() + timeout,
            path,
            decode if decode is not None else jute.REPLIES[opcode].read,
            watch,
        )
        conn = self._conn
        if conn is not None and conn.active and self._state.live:
            self._send(conn, req)
        else:
            self._backlog.append(req)
        return fut

    def _path(self, path: str, *, sequential: bool = False) -> str:
        return self._chroot.to_server(validate_path(path, sequential=sequential))

    # -- operations ------------------------------------------------------------------------
    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: float | None = None,
        makepath: bool = False,
    ) -> str:
        """Create a znode; returns its path (with the sequence number when ``sequential``).

        ``container``: a container node (removed by the server once its last child is gone).
        ``ttl`` (seconds): a persistent node removed when unchanged and childless for ``ttl``
        (the server needs ``zookeeper.extendedTypesEnabled``). ``makepath`` creates missing
        parents as persistent nodes.
        """
        server_path = self._path(path, sequential=sequential)
        _check_data(data)
        acls = tuple(acl) if acl is not None else self._default_acl
        if container:
            if ephemeral or sequential or ttl is not None:
                raise ValueError("a container node cannot be ephemeral, sequential or have a TTL")
            opcode, flags = OP.CREATE_CONTAINER, 4
            body = self._encode(opcode, server_path, data, acls, flags)
        elif ttl is not None:
            if ephemeral:
                raise ValueError("an ephemeral node cannot have a TTL")
            if ttl <= 0:
                raise ValueError("ttl must be positive")
            opcode, flags = OP.CREATE_TTL, 6 if sequential else 5
            body = self._encode(opcode, server_path, data, acls, flags, int(ttl * 1000))
        else:
            opcode, flags = OP.CREATE, int(ephemeral) | int(sequential) << 1
            body = self._encode(opcode, server_path, data, acls, flags)
        try:
            result = await self._submit(opcode, body, path)
        except NoNode:
            if not makepath or parent(path) == "/":
                raise
            await self.ensure_path(parent(path), acl=acl)
            result = await self._submit(opcode, body, path)
        return self._chroot.to_client(result[0])

    async def ensure_path(self, path: str, *, acl: Sequence[ACL] | None = None) -> None:
        """Create ``path`` and its missing parents as persistent nodes; existing ones are fine."""
        validate_path(path)
        if path == "/":
            return
        missing: list[str] = []
        node = path
        while node != "/":
            if await self.exists(node) is not None:
                break
            missing.append(node)
            node = parent(node)
        for node in reversed(missing):
            with suppress(NodeExists):
                await self.create(node, acl=acl)

    async def delete(self, path: str, version: int = -1, *, recursive: bool = False) -> None:
        """Delete a znode (only at ``version`` unless -1). ``recursive`` deletes its subtree
        first (children that vanish meanwhile are fine)."""
        if recursive:
            try:
                kids = await self.children(path)
            except NoNode:
                return
            for kid in kids:
                await self.delete(f"{path.rstrip('/')}/{kid}", recursive=True)
            with suppress(NoNode):
                await self.delete(path, version)
            return
        body = self._encode(OP.DELETE, self._path(path), version)
        await self._submit(OP.DELETE, body, path)

    async def exists(self, path: str, *, watch: Watcher | None = None) -> ZnodeStat | None:
        """The znode's stat, or None. ``watch`` fires once on create, delete or data change."""
        body = self._encode(OP.EXISTS, self._path(path), watch is not None)
        w = (_DATA, path, watch) if watch is not None else None
        result = await self._submit(OP.EXISTS, body, path, watch=w)
        return None if result is None else result[0]

    async def get(self, path: str, *, watch: Watcher | None = None) -> tuple[bytes, ZnodeStat]:
        """The znode's data and stat. ``watch`` fires once on data change or delete."""
        body = self._encode(OP.GET_DATA, self._path(path), watch is not None)
        w = (_DATA, path, watch) if watch is not None else None
        data, stat = await self._submit(OP.GET_DATA, body, path, watch=w)
        return data, stat

    async def set(self, path: str, data: bytes, version: int = -1) -> ZnodeStat:
        """Replace the znode's data (only at ``version`` unless -1); returns the new stat."""
        _check_data(data)
        body = self._encode(OP.SET_DATA, self._path(path), data, version)
        (stat,) = await self._submit(OP.SET_DATA, body, path)
        return stat  # type: ignore[no-any-return]

    async def children(self, path: str, *, watch: Watcher | None = None) -> list[str]:
        """The names of the znode's children. ``watch`` fires once when they change or the node
        is deleted."""
        body = self._encode(OP.GET_CHILDREN, self._path(path), watch is not None)
        w = (_CHILD, path, watch) if watch is not None else None
        (names,) = await self._submit(OP.GET_CHILDREN, body, path, watch=w)
        return names  # type: ignore[no-any-return]

    async def children_with_stat(
        self, path: str, *, watch: Watcher | None = None
    ) -> tuple[list[str], ZnodeStat]:
        body = self._encode(OP.GET_CHILDREN2, self._path(path), watch is not None)
        w = (_CHILD, path, watch) if watch is not None else None
        names, stat = await self._submit(OP.GET_CHILDREN2, body, path, watch=w)
        return names, stat

    async def get_acl(self, path: str) -> tuple[list[ACL], ZnodeStat]:
        body = self._encode(OP.GET_ACL, self._path(path))
        acl, stat = await self._submit(OP.GET_ACL, body, path)
        return acl, stat

    async def set_acl(self, path: str, acl: Sequence[ACL], version: int = -1) -> ZnodeStat:
        body = self._encode(OP.SET_ACL, self._path(path), tuple(acl), version)
        (stat,) = await self._submit(OP.SET_ACL, body, path)
        return stat  # type: ignore[no-any-return]

    async def sync(self, path: str = "/") -> None:
        """Make the connected server catch up with the leader for ``path`` before later reads."""
        body = self._encode(OP.SYNC, self._path(path))
        await self._submit(OP.SYNC, body, path)

    async def get_ephemerals(self, prefix: str = "/") -> list[str]:
        """The paths of this session's ephemeral nodes under ``prefix``."""
        body = self._encode(OP.GET_EPHEMERALS, self._path(prefix))
        (paths,) = await self._submit(OP.GET_EPHEMERALS, body, prefix)
        return [self._chroot.to_client(p) for p in paths]

    async def whoami(self) -> list[tuple[str, str]]:
        """The (scheme, user) identities the server knows this session as."""
        (ids,) = await self._submit(OP.WHO_AM_I, b"", None)
        return ids  # type: ignore[no-any-return]

    async def add_watch(
        self, path: str, watcher: Watcher, *, mode: WatchMode = WatchMode.PERSISTENT
    ) -> None:
        """A watch that stays: every change of the node (PERSISTENT) or of its whole subtree
        (PERSISTENT_RECURSIVE, children changes excepted) until ``remove_watch``.

        The server keeps one persistent mode per path and session: adding the other mode on the
        same path replaces it for every watcher of that path.
        """
        body = self._encode(OP.ADD_WATCH, self._path(path), int(mode))
        kind = _RECURSIVE if mode == WatchMode.PERSISTENT_RECURSIVE else _PERSISTENT
        await self._submit(OP.ADD_WATCH, body, path, watch=(kind, path, watcher))

    async def remove_watch(self, path: str, watcher: Watcher) -> None:
        """Remove ``watcher`` from every watch on ``path``: it is not called again. The server's
        watch goes once no watcher of that kind is left on the path."""
        server_path = self._path(path)
        emptied: set[int] = set()
        found = False
        for kind, reg in enumerate(self._watches):
            watchers = reg.get(path)
            if watchers and watcher in watchers:
                found = True
                del watchers[watcher]
                if not watchers:
                    del reg[path]
                    emptied.add(kind)
        if not found:
            raise NoWatcher(path=path)
        data, exist, child = (path in self._watches[k] for k in (_DATA, _EXIST, _CHILD))
        types = {_REMOVE_TYPE[k] for k in emptied if not (k in (_DATA, _EXIST) and (data or exist))}
        for wtype in sorted(types):
            try:
                await self._remove_server_watch(server_path, path, wtype)
            except MarshallingError:
                # ZooKeeper before 3.9 knows no persistent watch types in RemoveWatches; "any"
                # removes them too, so use it when no one-shot watch on the path would go with it
                if not (data or exist or child):
                    await self._remove_server_watch(server_path, path, 3)
                else:
                    log.debug("persistent watch on %s stays on the server until %s", path, self)

    async def _remove_server_watch(self, server_path: str, path: str, wtype: int) -> None:
        body = self._encode(OP.REMOVE_WATCHES, server_path, wtype)
        with contextlib.suppress(NoWatcher):  # it fired on the server meanwhile
            await self._submit(OP.REMOVE_WATCHES, body, path)

    async def add_auth(self, scheme: str, credential: str | bytes) -> None:
        """Authenticate this session (``digest``, ``user:password``); sent again on reconnect."""
        cred = credential.encode() if isinstance(credential, str) else credential
        body = self._encode(OP.AUTH, 0, scheme, cred)
        await self.wait_connected()
        conn = self._conn
        if conn is None or not conn.active:
            raise ConnectionLoss("not connected")
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._auth_waiters.append(fut)
        entry = (scheme, cred)
        self._auth.append(entry)  # before the reply: a reconnect meanwhile must send it again
        conn.write_request(XID.AUTH, OP.AUTH, body)
        try:
            await fut
        except BaseException:
            self._auth.remove(entry)
            raise

    async def multi(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply ``ops`` atomically: all or none. Raises ``MultiFailed`` (with a result or an
        error per op) when any fails."""
        body = bytearray()
        for op in ops:
            body += jute.MULTI_HEAD.pack(op.opcode, False, -1)
            if op.opcode == OP.CREATE:
                _check_data(op.data)
                acls = op.acl if op.acl is not None else self._default_acl
                path = self._path(op.path, sequential=bool(op.flags & 2))
                jute.REQUESTS[OP.CREATE].write(body, path, op.data, acls, op.flags)
            elif op.opcode == OP.DELETE or op.opcode == OP.CHECK:
                jute.REQUESTS[op.opcode].write(body, self._path(op.path), op.version)
            elif op.opcode == OP.SET_DATA:
                _check_data(op.data)
                jute.REQUESTS[OP.SET_DATA].write(body, self._path(op.path), op.data, op.version)
            else:
                raise ValueError(f"opcode {op.opcode} is not allowed in a multi")
        body += jute.MULTI_HEAD.pack(-1, True, -1)
        if len(body) + 8 > MAX_PACKET:
            raise PayloadTooLarge(f"multi of {len(body) + 8} bytes exceeds {MAX_PACKET} bytes")
        results: list[OpResult | ZooKeeperError] = await self._submit(
            OP.MULTI, body, None, decode=self._decode_multi
        )
        for i, res in enumerate(results):
            if isinstance(res, ZooKeeperError) and not isinstance(res, RolledBack):
                cause = error_for_code(res.code, ops[i].path if i < len(ops) else None)
                results[i] = cause
                raise MultiFailed(list(results), i, cause)
        return results  # type: ignore[return-value]

    def _decode_multi(self, frame: bytes, pos: int) -> list[OpResult | ZooKeeperError]:
        out: list[OpResult | ZooKeeperError] = []
        head = jute.MULTI_HEAD
        to_client = self._chroot.to_client
        try:
            while True:
                optype, done, _err = head.unpack_from(frame, pos)
                pos += head.size
                if done:
                    return out
                if optype == OP.ERROR:
                    (code,) = jute.INT.unpack_from(frame, pos)
                    pos += 4
                    out.append(RolledBack() if code == 0 else error_for_code(code))
                    continue
                values, pos = jute.REPLIES[optype].decode(frame, pos)
                if optype == OP.CREATE:
                    out.append(CreateResult(to_client(values[0])))
                elif optype in (OP.CREATE2, OP.CREATE_CONTAINER, OP.CREATE_TTL):
                    out.append(CreateResult(to_client(values[0]), values[1]))
                elif optype == OP.DELETE:
                    out.append(DeleteResult())
                elif optype == OP.SET_DATA:
                    out.append(SetDataResult(values[0]))
                elif optype == OP.CHECK:
                    out.append(CheckResult())
                else:
                    raise ProtocolError(f"unexpected op {optype} in a multi reply")
        except (KeyError, IndexError, ValueError) as exc:
            raise ProtocolError(f"cannot decode multi reply: {exc}") from exc

    async def _ensure_namespace(self) -> None:
        prefix = self._chroot.prefix
        nodes = []
        node = prefix
        while node != "/":
            nodes.append(node)
            node = parent(node)
        for node in reversed(nodes):
            body = self._encode(OP.CREATE, node, b"", self._default_acl, 0)
            with suppress(NodeExists):
                await self._submit(OP.CREATE, body, node)


class _Expired(Exception):
    """Internal: the handshake found the session expired."""


def _check_data(data: bytes) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"znode data must be bytes, not {type(data).__name__}")
    if len(data) > MAX_PACKET:
        raise PayloadTooLarge(
            f"{len(data)} bytes of data exceed the znode limit of {MAX_PACKET} bytes"
        )


def _call_watcher(watcher: Watcher, event: WatchEvent) -> None:
    try:
        watcher(event)
    except Exception:
        log.exception("watcher %r failed on %s", watcher, event)
