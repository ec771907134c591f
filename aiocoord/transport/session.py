"""The I/O side of one session: connecting, the ticker, requests, authentication and watches.

``Session`` runs one task (the connection loop) and one timer (the ticker) per client; no task or
timer per request. Every state change goes through ``SessionMachine.apply`` (``state.py``); this
module only feeds it what happened and carries out what it answers.

Connecting: every address of every host, shuffled; each attempt bounded by the negotiated session
timeout divided by the number of addresses (as the Java client). After an established connection
drops, a random delay (0 to ``reconnect_delay`` seconds) before reconnecting, so that the clients
of a restarted member do not stampede the others at one instant; while every address fails,
exponential backoff with jitter. Both are cut short by the session's LOST deadline.

Securing a connection (``security.py``): with ``ssl``, the TLS handshake is part of the attempt
and bounded by its timeout; the server's certificate must name the host as the connect string
spells it. With ``sasl``, the SASL exchange runs on every connection after the connect handshake
and before anything else goes out on it (credentials, watches, requests); a refusal is terminal.

Requests in flight when the connection dies: reads (``Request.idempotent``) are sent again after
the reconnect, writes fail with ``ConnectionLoss`` (applied or not: the caller decides). A reply
that cannot be decoded fails its request with ``ProtocolError`` and drops the connection. When the
client closes, every request ends, whatever the connection does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Self, TypeVar

import anyio

from . import jute
from .connection import Connection
from .errors import (
    AuthFailed,
    BadArguments,
    BadVersion,
    ClientClosed,
    ConnectError,
    ConnectionLoss,
    CoordError,
    MarshallingError,
    NoNode,
    ProtocolError,
    RequestTimeout,
    SessionExpired,
    UnimplementedError,
    error_for_code,
)
from .hosts import Address, HostList
from .jute import OP, XID
from .paths import Chroot
from .requests import (
    AddWatch,
    CloseSession,
    Create,
    Delete,
    Exists,
    Multi,
    RemoveWatches,
    Request,
    auth_body,
    set_watches_body,
)
from .security import SaslOptions
from .state import (
    AuthRefused,
    Closed,
    Dropped,
    Established,
    Expired,
    Input,
    SessionMachine,
    Tick,
    Transition,
)
from .types import CreateResult, EventType, KeeperState, SessionEvent, SessionState, WatchEvent
from .watches import ANY_WATCH, Watcher, WatchKind, WatchRegistry

__all__ = ["Session", "SessionFeed"]

log = logging.getLogger("aiocoord.transport")

T = TypeVar("T")

_SET_WATCHES_CHUNK: Final = 128 * 1024
_FIRST_BACKOFF: Final = 0.05
_MAX_BACKOFF: Final = 2.0
#: how often a read-only session looks for a read/write server, at first and at most
_RW_PROBE_FIRST: Final = 0.1
_RW_PROBE_MAX: Final = 60.0
_ONE_SHOT_KINDS: Final = (WatchKind.DATA, WatchKind.EXIST, WatchKind.CHILD)
_PERSISTENT_KINDS: Final = (WatchKind.PERSISTENT, WatchKind.RECURSIVE)
_KIND_ORDER: Final = (
    WatchKind.DATA,
    WatchKind.EXIST,
    WatchKind.CHILD,
    WatchKind.PERSISTENT,
    WatchKind.RECURSIVE,
)


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


class _AuthCall:
    """An auth packet in flight: ``future`` for add_auth(); None for a credential sent again on
    connect (whose refusal is terminal)."""

    __slots__ = ("entry", "future")

    def __init__(self, entry: tuple[str, bytes], future: asyncio.Future[None] | None) -> None:
        self.entry = entry
        self.future = future


_EXPIRED: Final = object()  # an attempt found the session expired: start a new one at once
_GIVEN_UP: Final = ClientClosed("the caller gave up the request")


class Session:
    def __init__(
        self,
        hosts: HostList,
        chroot: Chroot,
        *,
        session_timeout: float,
        connect_timeout: float,
        request_timeout: float | None,
        auth: Sequence[tuple[str, bytes]],
        read_only: bool,
        reconnect_delay: float,
        ssl_context: ssl.SSLContext | None = None,
        sasl: SaslOptions | None = None,
    ) -> None:
        self.hosts = hosts
        self.chroot = chroot
        self.machine = SessionMachine(timeout=session_timeout)
        self.watches = WatchRegistry()
        self.requested_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.read_only = read_only
        self.reconnect_delay = reconnect_delay
        self.ssl = ssl_context
        self.sasl = sasl
        self._auth: list[tuple[str, bytes]] = list(auth)
        self._auth_calls: deque[_AuthCall] = deque()
        #: credentials sent on the current connection whose acceptance is not yet confirmed
        self._auth_unconfirmed = 0
        self._conn: Connection | None = None
        self._backlog: deque[Request[Any]] = deque()
        self._feeds: set[SessionFeed] = set()
        self._listeners: dict[Callable[[SessionEvent], object], None] = {}
        self._watcher_tasks: set[asyncio.Task[None]] = set()
        #: deletes of our ephemeral nodes whose outcome was lost: server path -> (the session
        #: that owes it, the client's path). Paid after each RECONNECTED, dropped with the session.
        self.owed: dict[str, tuple[int, str]] = {}
        self._last_errors: dict[str, str] = {}
        self._behind_warned: set[str] = set()
        self._avoid: Address | None = None
        self._conn_address: Address | None = None
        self._prefer: Address | None = None
        self._error: CoordError | None = None  # why nothing more is served
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._ticker: asyncio.TimerHandle | None = None
        # The connection loop is one task owned by the session and always awaited by close().
        # Not an anyio task group: a Client may be entered and exited in different tasks
        # (pytest-asyncio fixtures do that), which a task group's cancel scope cannot survive.
        self._runner: asyncio.Task[None] | None = None

    # -- what the client reads -------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        return self.machine.state

    @property
    def connected_host(self) -> str | None:
        conn = self._conn
        return conn.host if conn is not None and conn.active and not conn.dead else None

    @property
    def opened(self) -> bool:
        return self._loop is not None

    @property
    def closing(self) -> bool:
        return self._closing

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect; return once a session is established and its credentials accepted.

        Raises ``ConnectError`` (naming every host) after ``connect_timeout``, ``AuthFailed``
        when the server refuses the credentials. A failed open leaves nothing running.
        """
        self._loop = asyncio.get_running_loop()
        self._live = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner = self._loop.create_task(self._run(), name=f"aiocoord {self.hosts.names}")
        self._runner.add_done_callback(self._runner_done)
        self._schedule_tick()
        try:
            with anyio.fail_after(self.connect_timeout):
                while True:
                    if self._error is not None:
                        raise self._error
                    if self.machine.state.live and self._auth_unconfirmed == 0:
                        return
                    await self._changed.wait()
        except TimeoutError:
            errors = "; ".join(f"{h}: {e}" for h, e in self._last_errors.items()) or "no answer"
            await self.close()
            raise ConnectError(
                f"could not connect to ZooKeeper at {','.join(self.hosts.names)} within "
                f"{self.connect_timeout:g}s ({errors})",
                self.hosts.names,
            ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the session (its ephemeral nodes go at once). Bounded, shielded; every request
        still queued or in flight ends with ``ClientClosed``."""
        if self._closing:
            return
        self._closing = True
        self._error = ClientClosed("the client is closed")
        if self._loop is None:  # never opened: nothing runs, nothing to announce
            self.machine.apply(Closed())
            for feed in self._feeds:
                feed._close()
            return
        with anyio.CancelScope(shield=True):
            conn = self._conn
            session_id = self.machine.session_id
            if conn is not None and self.machine.state.live and not conn.dead:
                assert self._loop is not None
                req: Request[None] = CloseSession()
                req.future = self._loop.create_future()
                req.deadline = self._loop.time() + 2.0
                conn.send(req)
                with anyio.move_on_after(min(2.0, self.machine.timeout / 3)):
                    with contextlib.suppress(CoordError):
                        await req.future
                log.info("session 0x%x closed", session_id)
            if self._ticker is not None:
                self._ticker.cancel()
                self._ticker = None
            self._execute(self.machine.apply(Closed()))
            self._fail_queued(self._error)
            conn = self._conn
            if conn is not None:
                conn.close()  # fails what is still in flight (connection_lost)
                self._conn = None
            self._end_watches(KeeperState.CLOSED)
            for feed in self._feeds:
                feed._close()
            if conn is not None:
                await conn.wait_released(1.0)  # a TLS close: its close_notify exchange
            runner = self._runner
            if runner is not None and not runner.done():
                runner.cancel()
                with anyio.move_on_after(5):
                    await asyncio.wait([runner])
            await self._drain_watcher_tasks()

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closing:
            return
        exc = task.exception()
        if exc is None and self.machine.terminal:
            return  # stopped for good (refused credentials)
        log.critical("the session loop of %s died", ",".join(self.hosts.names), exc_info=exc)
        self._error = ClientClosed(f"the session loop died: {exc!r}")
        if self._conn is not None:
            self._conn.fail("session loop died")
        self._execute(self.machine.apply(Closed()))
        self._fail_queued(self._error)
        self._end_watches(KeeperState.CLOSED)

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing or self._loop is None:
            raise ClientClosed(
                "the client is closed" if self._closing else "the client is not open"
            )

    async def wait_live(self) -> None:
        """Wait until requests are served (CONNECTED, RECONNECTED or READ_ONLY)."""
        self._check_open()
        assert self._live is not None
        await self._live.wait()
        self._check_open()

    # -- listeners -------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[SessionEvent], object]) -> None:
        self._listeners[listener] = None

    def remove_listener(self, listener: Callable[[SessionEvent], object]) -> None:
        self._listeners.pop(listener, None)

    def add_feed(self, feed: SessionFeed) -> None:
        if self.machine.terminal and self._closing:
            feed._close()
        self._feeds.add(feed)

    def remove_feed(self, feed: SessionFeed) -> None:
        self._feeds.discard(feed)

    # -- requests --------------------------------------------------------------------------
    def submit(self, req: Request[T]) -> asyncio.Future[T]:
        """Queue ``req``: sent now when live, else when the session is (up to its deadline)."""
        self._check_open()
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[T] = loop.create_future()
        req.future = fut
        timeout = self.request_timeout if self.request_timeout is not None else self.machine.timeout
        req.deadline = loop.time() + timeout
        if req.watch is not None:
            self.watches.arming(_arm_kind(req), req.path or "/")
        conn = self._conn
        if conn is not None and conn.active and self.machine.state.live:
            conn.send(req)
        else:
            self._backlog.append(req)
        return fut

    def _finish(self, req: Request[Any], result: Any = None, exc: CoordError | None = None) -> None:
        """A request ended: its watch registered (on success) and its future settled."""
        fut = req.future
        assert fut is not None
        watcher = req.watch
        if watcher is not None:
            kind = _arm_kind(req)
            reg_kind = kind
            if exc is None and result is None and kind is WatchKind.DATA:
                reg_kind = WatchKind.EXIST  # exists() on a missing node waits for its creation
            ok = exc is None and not fut.done()
            self.watches.armed(kind, reg_kind, req.path or "/", watcher if ok else None)
            if exc is None and not ok and req.server_watch:
                # the caller gave up before the reply (cancelled, or its deadline ran out): the
                # server holds a watch nobody registered
                self._drop_unneeded(req.path or "/", reg_kind)
        if fut.done():
            return  # the caller gave up (cancelled)
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)

    def _drop_unneeded(self, path: str, kind: WatchKind) -> None:
        """Remove the server's ``kind`` watch on ``path`` that no callback has, unless a watcher
        or a read in flight needs it. Sent at once: a read sent after it sets its watch again,
        and a change made after it is not notified."""
        if self.watches.release(kind, path):
            fut = self._unwatch_now(path, kind)
            if fut is not None:
                fut.add_done_callback(functools.partial(self._unwatched, path, kind))

    def _unwatch_now(self, path: str, kind: WatchKind) -> asyncio.Future[None] | None:
        """Send the removal of the server's ``kind`` watch on ``path``; None when not live (the
        server keeps watches per connection: the next one is given only the watches still
        registered, SetWatches, so this one is gone from the server already)."""
        if self._closing or self._error is not None or not self.machine.state.live:
            return None
        wtype = kind.server_type
        if kind in _PERSISTENT_KINDS and not self.watches.others_on(path):
            # no other watch of ours there: "any" removes exactly this one, and ZooKeeper 3.8
            # refuses the persistent types (ZOOKEEPER-4472)
            wtype = ANY_WATCH
        return self.submit(RemoveWatches(self.chroot.to_server(path), path, wtype))

    def _unwatched(self, path: str, kind: WatchKind, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled():
            self._removal_ended(path, kind, fut.exception())

    def _removal_ended(self, path: str, kind: WatchKind, exc: BaseException | None) -> None:
        if isinstance(exc, (MarshallingError, UnimplementedError, BadArguments)):
            # 3.8 refuses a persistent type, and "any" would take our other watches on the path
            # along: kept until they have gone (``released``)
            log.debug("persistent watch on %s stays on the server while another does", path)
            self.watches.keep(kind, path)
        # else: done; or NoWatcher (it fired on the server meanwhile), or the connection (with
        # the watches the server kept for it) or the session went

    async def remove_server_watch(self, path: str, kind: WatchKind) -> None:
        """Remove the session's ``kind`` watch on ``path`` from the server."""
        fut = self._unwatch_now(path, kind)
        if fut is None:
            return
        try:
            await fut
        except CoordError as exc:
            self._removal_ended(path, kind, exc)

    def watch_on_server(self, kind: WatchKind, path: str) -> bool:
        """Whether a read watching ``path`` for ``kind`` must ask the server for a watch."""
        return not self.watches.covered(kind, path)

    async def add_auth(self, scheme: str, credential: bytes) -> None:
        body = auth_body(scheme, credential)
        await self.wait_live()
        conn = self._conn
        if conn is None or not conn.active:
            raise ConnectionLoss("not connected")
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        entry = (scheme, credential)
        self._auth.append(entry)  # before the reply: a reconnect meanwhile must send it again
        self._auth_calls.append(_AuthCall(entry, fut))
        conn.write_request(XID.AUTH, OP.AUTH, body)
        try:
            await fut
        except BaseException:
            with contextlib.suppress(ValueError):
                self._auth.remove(entry)
            raise

    # -- the connection loop ---------------------------------------------------------------
    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        loop = self._loop
        assert loop is not None
        while not self._stopped():
            addresses = await self.hosts.addresses(self._last_errors, self._avoid)
            if self._prefer is not None and self._prefer in addresses:
                addresses.remove(self._prefer)
                addresses.insert(0, self._prefer)
            self._prefer = None
            served = False
            delay = 0.0
            for address in addresses:
                if self._stopped():
                    return
                outcome = await self._attempt(address)
                if outcome is _EXPIRED:
                    served = True  # start again at once, with a new session
                    break
                if not isinstance(outcome, Connection):
                    continue
                served = True
                self._last_errors.clear()
                if not await self._serve(outcome):
                    # dropped: wait a random moment so the clients of a failed member spread
                    delay = random.uniform(0, self.reconnect_delay)
                break
            if self._stopped():
                return
            if served:
                backoff = _FIRST_BACKOFF
            else:
                delay = backoff * random.uniform(0.5, 1.5)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            deadline = self.machine.lost_deadline
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - loop.time()))
            if delay > 0:
                await anyio.sleep(delay)

    def _stopped(self) -> bool:
        return self._closing or self.machine.terminal

    async def _attempt(self, address: Address) -> Connection | object | None:
        """One handshake: the installed connection, ``_EXPIRED``, or None (failed; noted)."""
        loop = self._loop
        assert loop is not None
        machine = self.machine
        conn = Connection(self, address.endpoint, loop)
        sent_id = machine.connect_id
        # as the Java client: the negotiated timeout shared among the addresses
        attempt_timeout = max(0.1, machine.timeout / max(1, len(self.hosts)))
        connected = tls_handshake = False
        try:
            with anyio.fail_after(attempt_timeout):
                await loop.create_connection(lambda: conn, address.ip, address.port)
                if self.ssl is not None:
                    # within the attempt's bound: a server that never completes the handshake
                    # costs one attempt, not the session
                    tls_handshake = True
                    await conn.start_tls(self.ssl, address.name)
                    tls_handshake = False
                connected = True
                conn.write_raw(
                    jute.encode_connect(
                        machine.last_zxid,
                        int(self.requested_timeout * 1000),
                        sent_id,
                        machine.passwd if sent_id else bytes(16),
                        self.read_only,
                    )
                )
                frame = await conn.handshake
                # a hang-up that came with the answer is reported by the loop's next callbacks:
                # let them run, so a connection already dead is never installed
                await asyncio.sleep(0)
                if conn.dead:
                    raise ProtocolError("the connection died during the handshake")
                timeout_ms, new_id, passwd, read_only = jute.decode_connected(frame)
                if timeout_ms > 0 and self.sasl is not None:
                    await self._authenticate(conn, self.sasl)
        except AuthFailed as exc:
            conn.fail("SASL authentication refused")
            self._last_errors[address.label] = str(exc)
            log.error("%s; the client stops (no reconnect)", exc)
            self._error = exc
            self._execute(machine.apply(AuthRefused(str(exc))))
            return None
        except (OSError, TimeoutError, ProtocolError) as exc:
            conn.fail("handshake did not complete")
            text = str(exc) or type(exc).__name__
            if tls_handshake:
                text = f"TLS handshake failed: {_tls_reason(exc, attempt_timeout)}"
            self._last_errors[address.label] = text
            log.debug("connect to %s failed: %s", address.label, text)
            if connected and isinstance(exc, ProtocolError) and machine.last_zxid:
                await self._check_behind(address)
            return None
        except BaseException:
            conn.fail("handshake did not complete")
            raise
        if timeout_ms <= 0:
            conn.fail("session expired")
            expired = machine.apply(Expired(sent_id, "the server says the session expired"))
            if expired.lost is None:
                # not about our session (a new one cannot have expired): a failed attempt
                self._last_errors[address.label] = "answered 'expired' to a new session"
                return None
            log.warning("session 0x%x expired (the server says so on reconnect)", sent_id)
            self._execute(expired)
            return _EXPIRED
        transition = machine.apply(
            Established(sent_id, new_id, passwd, timeout_ms / 1000, read_only, address.endpoint)
        )
        if not transition.install:
            # our session was declared lost while this handshake was under way: do not revive
            # it, end it on the server so that what it held goes now, not at its timeout
            conn.write_request(1, OP.CLOSE, b"")
            conn.close()
            return _EXPIRED
        self._conn_address = address
        self._install(conn, transition)
        self._behind_warned.clear()
        return conn

    def _tls_args(self, address: Address) -> dict[str, Any]:
        """``create_connection``'s TLS arguments: the name checked is the connect string's."""
        if self.ssl is None:
            return {}
        return {"ssl": self.ssl, "server_hostname": address.name}

    async def _authenticate(self, conn: Connection, options: SaslOptions) -> None:
        """The SASL exchange on a new connection (``security.py``). Raises ``AuthFailed`` when the
        server refuses (its error reply), ``ProtocolError`` when the connection dies first."""
        client = options.client(conn.host)
        challenge: bytes | None = None
        while True:
            try:
                token = client.process(challenge)
            except Exception as exc:  # pure-sasl's errors: a server answer it rejects
                raise AuthFailed(f"SASL {options.mechanism} with {conn.host}: {exc}") from exc
            if client.complete and not token:
                return
            body = bytearray()
            jute.REQUESTS[OP.SASL].write(body, token or b"")
            xid, reply = conn.exchange(OP.SASL, body)
            frame = await reply
            if len(frame) < jute.REPLY_HEAD.size:
                raise ProtocolError(f"short SASL reply from {conn.host}")
            got, _, err = jute.REPLY_HEAD.unpack_from(frame, 0)
            if got != xid:
                raise ProtocolError(f"SASL reply with xid {got}, not {xid}, from {conn.host}")
            if err:
                raise AuthFailed(
                    f"ZooKeeper at {conn.host} refused SASL {options.mechanism} authentication of"
                    f" {options.username!r} ({error_for_code(err)})"
                )
            (challenge,) = jute.REPLIES[OP.SASL].read(frame, jute.REPLY_HEAD.size)

    def _install(self, conn: Connection, transition: Transition) -> None:
        if transition.lost is not None:
            self._lose(transition.lost)
        self._conn = conn
        self._auth_calls = deque()
        for entry in self._auth:
            self._auth_calls.append(_AuthCall(entry, None))
            conn.write_request(XID.AUTH, OP.AUTH, auth_body(*entry))
        self._auth_unconfirmed = len(self._auth)
        if self.watches:
            self._restore_watches(conn)
        backlog, self._backlog = self._backlog, deque()
        for req in backlog:
            assert req.future is not None
            if req.future.done() and not self._still_needed(req):
                self._finish(req, exc=_GIVEN_UP)  # the caller gave up: only the bookkeeping
            else:
                conn.send(req)
        self._execute(Transition(transition.events))
        # last: frames that came right behind the handshake may kill the connection, which then
        # goes through connection_lost like any other (reads queued again, writes failed)
        conn.activate()

    def _still_needed(self, req: Request[Any]) -> bool:
        """A given-up AddWatch is sent all the same when one-shot watches on its path rely on it
        (they were registered without a server watch of their own)."""
        return isinstance(req, AddWatch) and any(
            self.watches.has(kind, req.path or "/") for kind in _ONE_SHOT_KINDS
        )

    async def _serve(self, conn: Connection) -> bool:
        """Until the connection dies: True when it was left for a read/write server."""
        if self.machine.state is not SessionState.READ_ONLY:
            await conn.gone.wait()
            return False
        interval = _RW_PROBE_FIRST
        while not conn.dead:
            with anyio.move_on_after(interval):
                await conn.gone.wait()
            if conn.dead:
                return False
            found = await self._find_read_write(conn.host)
            if found is not None:
                log.info("read/write server %s found: leaving read-only %s", found.label, conn.host)
                self._prefer = found
                conn.close()
                return True
            interval = min(interval * 2, _RW_PROBE_MAX)
        return False

    async def _find_read_write(self, current: str) -> Address | None:
        """An address whose server serves read/write (``isro`` answers ``rw``), as the Java
        client's pingRwServer."""
        for address in await self.hosts.addresses({}):
            if address.endpoint == current:
                continue
            with contextlib.suppress(OSError, TimeoutError):
                with anyio.fail_after(1.0):
                    reader, writer = await asyncio.open_connection(
                        address.ip, address.port, **self._tls_args(address)
                    )
                    try:
                        writer.write(b"isro")
                        answer = await reader.read(2)
                    finally:
                        writer.close()
                if answer == b"rw":
                    return address
        return None

    async def _check_behind(self, address: Address) -> None:
        """A server that closes the handshake may be behind this client (it refuses a client
        that has seen a newer zxid): say so at WARNING, once per address and session."""
        if address.label in self._behind_warned:
            return
        server_zxid = None
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            with anyio.fail_after(1.0):
                reader, writer = await asyncio.open_connection(
                    address.ip, address.port, **self._tls_args(address)
                )
                try:
                    writer.write(b"srvr")
                    reply = (await reader.read(4096)).decode(errors="replace")
                finally:
                    writer.close()
            for line in reply.splitlines():
                if line.startswith("Zxid:"):
                    server_zxid = int(line.split(":", 1)[1].strip(), 16)
        seen = self.machine.last_zxid
        if server_zxid is not None and server_zxid < seen:
            self._behind_warned.add(address.label)
            log.warning(
                "the server %s is behind this client (its zxid 0x%x, this session has seen 0x%x):"
                " it refuses session 0x%x until it catches up; a rebuilt or restored ensemble never"
                " does, so the session will be declared LOST at its timeout and a new one starts"
                " from zxid 0",
                address.label,
                server_zxid,
                seen,
                self.machine.session_id,
            )

    def _restore_watches(self, conn: Connection) -> None:
        to_server = self.chroot.to_server
        lists = [[to_server(p) for p in self.watches.server_paths(k)] for k in _KIND_ORDER]
        if not any(lists[3:]):
            lists = lists[:3]  # SetWatches (three lists) for servers before 3.6
        opcode = OP.SET_WATCHES2 if len(lists) == 5 else OP.SET_WATCHES
        chunk: list[list[str]] = [[] for _ in lists]
        size = 0
        zxid = self.machine.last_zxid
        for i, paths in enumerate(lists):
            for path in paths:
                chunk[i].append(path)
                size += len(path) + 4
                if size >= _SET_WATCHES_CHUNK:
                    conn.write_request(XID.SET_WATCHES, opcode, set_watches_body(zxid, chunk))
                    chunk, size = [[] for _ in lists], 0
        if size:
            conn.write_request(XID.SET_WATCHES, opcode, set_watches_body(zxid, chunk))
        log.debug("restored watches from zxid 0x%x", zxid)

    # -- from the connection ---------------------------------------------------------------
    def reply_received(
        self, conn: Connection, req: Request[Any], frame: bytes, zxid: int, err: int
    ) -> None:
        machine = self.machine
        if zxid > machine.last_zxid:
            machine.last_zxid = zxid
        if err:
            is_result, value = req.result_for_error(err)
            if is_result:
                self._finish(req, value)
            else:
                self._finish(req, exc=error_for_code(err, req.path))
            return
        try:
            result = req.decode(frame, 16)
        except Exception as exc:
            self._finish(req, exc=ProtocolError(f"cannot decode the reply to {req!r}: {exc!r}"))
            conn.fail(f"undecodable reply from {conn.host}")
            return
        if self.owed:
            self._forgive_created(req, result)
        self._finish(req, result)

    def _forgive_created(self, req: Request[Any], result: Any) -> None:
        """A node this client just created (a sequential name too: it recurs once its parent is
        recreated) must not be removed by a delete owed under its name. Done as the reply comes,
        before any owed-delete check answered after it can act."""
        if isinstance(req, Create) and isinstance(result, str):
            self.forgive(result)
        elif isinstance(req, Multi) and isinstance(result, list):
            for res in result:
                if isinstance(res, CreateResult):
                    self.forgive(self.chroot.to_server(res.path))

    def frame_received(self, conn: Connection, xid: int, frame: bytes) -> None:
        if conn is not self._conn:
            return
        if xid == XID.NOTIFICATION:
            try:
                etype, state, path = jute.WATCHER_EVENT.read(frame, jute.REPLY_HEAD.size)
                event = WatchEvent(
                    EventType(etype), KeeperState(state), self.chroot.to_client(path)
                )
            except (ValueError, ProtocolError) as exc:
                log.error("undecodable watch event from %s: %s", conn.host, exc)
                conn.fail("undecodable watch event")  # watches are restored from the last zxid
                return
            for watcher in self.watches.fired(event):
                self._call_watcher(watcher, event)
            for kind in self.watches.released(event.path):  # kept for a one-shot that fired
                self._drop_unneeded(event.path, kind)
        elif xid == XID.AUTH:
            self._auth_replied(conn, jute.REPLY_HEAD.unpack_from(frame, 0)[2])
        elif xid == XID.SET_WATCHES:
            err = jute.REPLY_HEAD.unpack_from(frame, 0)[2]
            if err:
                log.error("SetWatches rejected by %s: %s", conn.host, error_for_code(err))
        elif xid > 0:  # a reply whose request's deadline ran out: its zxid still counts
            self.machine.saw_zxid(jute.REPLY_HEAD.unpack_from(frame, 0)[1])
        elif xid != XID.PING:
            log.warning("reply with unexpected xid %d from %s", xid, conn.host)

    def _auth_replied(self, conn: Connection, err: int) -> None:
        call = self._auth_calls.popleft() if self._auth_calls else None
        if call is None:
            log.warning("auth reply with no auth request from %s", conn.host)
            return
        if not err:
            if call.future is None:
                self._auth_unconfirmed -= 1
                self._wake()
            elif not call.future.done():
                call.future.set_result(None)
            return
        error = error_for_code(err)
        if call.future is not None:
            # add_auth() refused: the server drops the connection; the session goes on without
            # the credential
            log.error(
                "credentials for scheme %r refused by %s: %s", call.entry[0], conn.host, error
            )
            with contextlib.suppress(ValueError):
                self._auth.remove(call.entry)
            if not call.future.done():
                call.future.set_exception(error)
            return
        log.error(
            "credentials for scheme %r refused by %s: %s; the client stops (no reconnect)",
            call.entry[0],
            conn.host,
            error,
        )
        self._error = AuthFailed(f"ZooKeeper refused the credentials for scheme {call.entry[0]!r}")
        self._execute(self.machine.apply(AuthRefused(str(error))))
        conn.fail("credentials refused")

    def connection_lost(self, conn: Connection, reason: str, in_flight: list[Request[Any]]) -> None:
        loop = self._loop
        assert loop is not None
        if conn is not self._conn:
            for req in in_flight:  # a connection never installed carries none; be safe
                self._finish(req, exc=ConnectionLoss(f"connection to {conn.host} lost", req.path))
            return
        self._conn = None
        if self._error is not None:
            for req in in_flight:
                self._finish(req, exc=self._error)
            return
        self._avoid = self._conn_address
        now = loop.time()
        for req in in_flight:
            if req.idempotent and req.deadline > now:
                self._backlog.append(req)  # sent again after the reconnect
            else:
                self._finish(
                    req, exc=ConnectionLoss(f"connection to {conn.host} lost ({reason})", req.path)
                )
        for call in self._auth_calls:
            if call.future is not None and not call.future.done():
                call.future.set_exception(ConnectionLoss(f"connection lost ({reason})"))
        self._auth_calls.clear()
        self._auth_unconfirmed = 0
        self._execute(self.machine.apply(Dropped(conn.host, reason, conn.last_recv)))

    # -- state -----------------------------------------------------------------------------
    def apply(self, event: Input) -> None:
        self._execute(self.machine.apply(event))

    def _execute(self, transition: Transition) -> None:
        if transition.lost is not None and not transition.install:
            self._lose(transition.lost)
        for event in transition.events:
            self._log_event(event)
            self._announce(event)
            if event.state is SessionState.RECONNECTED and self.owed:
                self._spawn(self._pay_owed())
            elif event.state is SessionState.LOST:
                self.owed.clear()  # the nodes went with the session
        self._wake()

    # -- deletes owed --------------------------------------------------------------------
    def owe_delete(self, server_path: str, path: str, session_id: int) -> None:
        """The delete of ``path``, an ephemeral node of session ``session_id``, was lost (or
        cancelled in flight): send it again after each RECONNECTED until it is done. Dropped
        when that session ends (the node goes with it) or when this client creates the path
        again (``forgive``)."""
        if session_id and session_id == self.machine.session_id:
            self.owed[server_path] = (session_id, path)
            log.info("delete of %s owed: sent again after the next reconnect", path)

    def forgive(self, server_path: str) -> None:
        """A create of ``server_path`` is being sent: a delete owed there must not remove it."""
        self.owed.pop(server_path, None)

    async def _pay_owed(self) -> None:
        """Delete each owed node that is still this session's (checked first: after a lost
        reply the delete may have been applied, and another session may hold the name now)."""
        session = self.machine.session_id
        for server_path, (owner, path) in list(self.owed.items()):
            if owner != session:
                self.owed.pop(server_path, None)  # went with its session
                continue
            try:
                stat = await self.submit(Exists(server_path, path, None, False))
                if self.owed.get(server_path) != (owner, path):
                    continue  # forgiven (created again) meanwhile
                if stat is not None and stat.ephemeral_owner == owner:
                    await self.submit(Delete(server_path, path, stat.version))
                    log.info("deleted %s (owed since a lost reply)", path)
                self.owed.pop(server_path, None)
            except (ConnectionLoss, RequestTimeout):
                return  # still owed: the next RECONNECTED pays
            except CoordError as exc:  # NoNode, BadVersion: gone or not ours any more
                if self.owed.get(server_path) == (owner, path):
                    self.owed.pop(server_path, None)
                if not isinstance(exc, (NoNode, BadVersion)):
                    log.warning("could not delete %s (owed): %s", path, exc)

    def _spawn(self, work: Awaitable[object], what: object = "session work") -> None:
        """Run ``work`` as a task the session owns (drained at close)."""
        assert self._loop is not None
        task = self._loop.create_task(self._await_logged(work, what))
        self._watcher_tasks.add(task)
        task.add_done_callback(self._watcher_tasks.discard)

    def _lose(self, reason: str) -> None:
        """Everything of the previous session ends: queued requests, watches, auth calls."""
        auth_failed = self.machine.state is SessionState.AUTH_FAILED
        if auth_failed:
            assert self._error is not None
            exc: CoordError = self._error
            self._fail_queued(exc)
            self._end_watches(KeeperState.AUTH_FAILED)
        else:
            exc = SessionExpired(f"session expired ({reason})")
            self._fail_queued(exc)
            self._end_watches(KeeperState.EXPIRED)

    def _log_event(self, event: SessionEvent) -> None:
        state, sid = event.state, event.session_id
        if state is SessionState.CONNECTED:
            log.info(
                "session 0x%x established with %s (timeout %gs)", sid, event.host,
                self.machine.timeout,
            )  # fmt: skip
        elif state is SessionState.RECONNECTED:
            log.info("session 0x%x reconnected to %s", sid, event.host)
        elif state is SessionState.READ_ONLY:
            log.warning(
                "connected read-only to %s (cut off from its quorum): reads only, looking for a"
                " read/write server",
                event.host,
            )
        elif state is SessionState.SUSPENDED:
            deadline = self.machine.lost_deadline
            assert self._loop is not None
            left = f"{deadline - self._loop.time():.1f}s" if deadline is not None else "-"
            log.warning(
                "session 0x%x suspended: connection to %s lost (LOST in %s unless reconnected)",
                sid,
                event.host,
                left,
            )
        elif state is SessionState.LOST:
            log.warning("session 0x%x lost", sid)

    def _announce(self, event: SessionEvent) -> None:
        live = self._live
        assert live is not None
        if event.state.live or self.machine.terminal:
            live.set()  # terminal: wake waiters so they see it
        else:
            live.clear()
        for feed in list(self._feeds):
            feed._push(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("session listener %r failed on %s", listener, event)

    def _wake(self) -> None:
        changed = self._changed
        if changed is not None:
            changed.set()
            self._changed = asyncio.Event()

    def _fail_queued(self, exc: CoordError) -> None:
        backlog, self._backlog = self._backlog, deque()
        for req in backlog:
            self._finish(req, exc=exc)
        for call in self._auth_calls:
            if call.future is not None and not call.future.done():
                call.future.set_exception(exc)

    def _end_watches(self, state: KeeperState) -> None:
        for watcher, event in self.watches.end_all(state):
            self._call_watcher(watcher, event)

    # -- watchers --------------------------------------------------------------------------
    def _call_watcher(self, watcher: Watcher, event: WatchEvent) -> None:
        try:
            result = watcher(event)
        except Exception:
            log.exception("watcher %r failed on %s", watcher, event)
            return
        if inspect.isawaitable(result):
            self._spawn(result, f"watcher {watcher!r} on {event}")

    @staticmethod
    async def _await_logged(work: Awaitable[object], what: object) -> None:
        try:
            await work
        except Exception:
            log.exception("%s failed", what)

    async def _drain_watcher_tasks(self) -> None:
        """Let async watchers (the CLOSED events included) finish briefly, then cancel them."""
        tasks = set(self._watcher_tasks)
        if not tasks:
            return
        with anyio.move_on_after(1.0):
            await asyncio.wait(tasks)
        for task in tasks:
            task.cancel()
        with anyio.move_on_after(1.0):
            await asyncio.wait(tasks)

    # -- the ticker: pings, read timeout, deadlines, client-side expiry ---------------------
    def _schedule_tick(self) -> None:
        loop = self._loop
        assert loop is not None
        interval = max(0.02, min(0.5, self.machine.timeout / 10))
        when = loop.time() + interval
        deadline = self.machine.lost_deadline
        if deadline is not None and deadline < when:
            when = deadline  # LOST is reported on time, not at the next tick
        self._ticker = loop.call_at(when, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        conn = self._conn
        timeout = self.machine.timeout
        if conn is not None and conn.active and not conn.dead:
            silent = now - conn.last_recv
            if silent > timeout * 2 / 3:
                conn.fail(f"no reply for {silent:.1f}s (read timeout)")
            elif now - conn.last_send >= timeout / 3:
                conn.write_request(XID.PING, OP.PING, b"")
        else:
            self.apply(Tick(now))
        self._expire_requests(now)
        if not self._closing:
            self._schedule_tick()

    def _expire_requests(self, now: float) -> None:
        backlog = self._backlog
        if backlog:
            keep: deque[Request[Any]] = deque()
            for req in backlog:
                assert req.future is not None
                if req.future.done():
                    self._finish(req, exc=_GIVEN_UP)
                elif req.deadline <= now:
                    self._finish(
                        req,
                        exc=RequestTimeout(
                            "no connection to ZooKeeper before the deadline", req.path
                        ),
                    )
                else:
                    keep.append(req)
            self._backlog = keep
        conn = self._conn
        if conn is not None and conn.in_flight:
            for req in conn.expire(now):
                exc = RequestTimeout("the server did not answer before the deadline", req.path)
                if req.watch is None:
                    self._finish(req, exc=exc)
                elif req.future is not None and not req.future.done():
                    # a watching read stays in flight: its late reply settles the watch the
                    # server set (registered for nobody now: removed there)
                    req.future.set_exception(exc)


def _tls_reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"the server's certificate is refused: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:.2g}s"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return f"{exc or type(exc).__name__} (does the server require a client certificate?)"


def _arm_kind(req: Request[Any]) -> WatchKind:
    if isinstance(req, AddWatch):
        return req.kind
    kind = req.watch_kind
    assert kind is not None
    return kind
