"""The recipes' shared primitives: which errors a retry after reconnecting cures, a one-shot
watch wakeup, a latest-wins value, a session-listener scope, the re-reads behind a watch-fed view
of one node (``Rereads``), holding an ephemeral node that a
previous session of ours may still hold, and a fenced hold on a node (a term of leadership, a held
lock) with its fencing token and ``guard(ops)``. (Deletes owed after a blip are the client's:
``Client.delete_ephemeral``.)"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import anyio

from ..transport.client import Client, Watcher
from ..transport.errors import (
    ClientClosed,
    ConnectionLoss,
    CoordError,
    MultiFailed,
    NodeExists,
    RequestTimeout,
    SessionExpired,
)
from ..transport.types import (
    EventType,
    Op,
    OpResult,
    SessionEvent,
    SessionState,
    WatchEvent,
    ZnodeStat,
)

#: errors after which the recipes wait for the session and try again
RETRYABLE = (ConnectionLoss, RequestTimeout, SessionExpired)

T = TypeVar("T")


async def pipelined(calls: Sequence[Callable[[], Awaitable[T]]], window: int = 1000) -> list[T]:
    """The results of ``calls`` in order, at most ``window`` in flight at once (the client
    pipelines them on its connection). The first error cancels the rest and is raised."""
    results: list[T | None] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]()

    for start in range(0, len(calls), window):
        try:
            async with anyio.create_task_group() as tg:
                for i in range(start, min(start + window, len(calls))):
                    tg.start_soon(one, i)
        except BaseExceptionGroup as group:  # raised as it is: callers catch NoNode and such
            raise group.exceptions[0] from None
    return results  # type: ignore[return-value]


class Wakeup:
    """A one-shot wakeup for watch-driven waits: pass ``wakeup.watch`` as the watcher of the
    reads that decide whether to wait, then ``await wakeup.wait()``: it returns once any of them
    fired (or ``set()`` was called). One per wait: a fired watch is gone."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def watch(self, _event: WatchEvent) -> None:
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


class Latest(Generic[T]):
    """A value of which only the newest state matters: ``publish()`` replaces it (never blocks,
    never queues) and wakes its consumers; ``await latest.wait_newer(seen)`` returns the newest
    value once it differs from ``seen``, the value the consumer last took (at once when it
    already does). A burst of publishes wakes a consumer once, with the last value.

    ``close()`` ends it: ``wait_newer`` then raises ``anyio.EndOfStream`` (a value newer than
    ``seen`` or not: nobody is interested any more). Publishers may be synchronous callbacks (a
    watch, a session listener): only consumers create events."""

    __slots__ = ("_changed", "_closed", "_value")

    def __init__(self, value: T) -> None:
        self._value = value
        self._changed = anyio.Event()
        self._closed = False

    @property
    def value(self) -> T:
        return self._value

    def publish(self, value: T) -> None:
        self._value = value
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    async def wait_newer(self, seen: T) -> T:
        while not self._closed:
            if self._value != seen:
                return self._value
            if self._changed.is_set():  # by a publish this consumer has seen: wait for the next
                self._changed = anyio.Event()
            await self._changed.wait()
        raise anyio.EndOfStream


async def wait_watched(
    client: Client, paths: str | Sequence[str], woken: Wakeup, watcher: Watcher | None = None
) -> None:
    """Wait until ``woken`` is set (by ``watcher``, default ``woken.watch``: the watches on
    ``paths`` the caller set), or the session is back or lost (the caller looks again). The
    watches are removed however this ends, cancelled too."""

    def on_session(event: SessionEvent) -> None:
        if event.state in (SessionState.LOST, SessionState.RECONNECTED):
            woken.set()

    try:
        with listening(client, on_session):
            await woken.wait()
    finally:
        for path in [paths] if isinstance(paths, str) else paths:
            await unwatch(client, path, watcher or woken.watch)


async def unwatch(client: Client, path: str, watcher: Watcher) -> None:
    """Remove ``watcher`` from ``path`` if it has not fired: shielded, bounded by the session
    timeout, errors ignored (``NoWatcher``: it fired; a lost connection took the watch along)."""
    with (
        anyio.CancelScope(shield=True),
        anyio.move_on_after(client.negotiated_timeout),
        contextlib.suppress(CoordError),
    ):
        await client.remove_watch(path, watcher)


@contextlib.contextmanager
def listening(client: Client, listener: Callable[[SessionEvent], object]) -> Iterator[None]:
    """``listener`` receives the client's session events while the block runs."""
    client.add_listener(listener)
    try:
        yield
    finally:
        client.remove_listener(listener)


class Rereads(Generic[T]):
    """The reads behind a watch-fed view of one node (a data or children watch, a config feed):
    ``await rereads.next()`` returns what ``read(watch)`` returns, read afresh once something
    asked for it since the last read: the first call, a watch that ``read`` set firing, the
    session coming back. A burst of asks costs one read (latest wins).

    RECONNECTED asks for a re-check. LOST asks nothing by itself (the ended watches' EXPIRED
    events are ignored): the CONNECTED of the new session asks, and that read sets the watches
    again on the new session, so a change made meanwhile (a node deleted and re-created
    included) is seen. Errors a reconnect cures are retried once the session is back.

    ``stale`` is True until the first read, and from SUSPENDED or LOST until a read asked after
    the session came back has been answered. ``next()`` raises ``anyio.EndOfStream`` once the
    block is left or the client closed. Leaving the block removes the listener and the watches
    on ``path`` (shielded, bounded).
    """

    def __init__(
        self,
        client: Client,
        path: str,
        read: Callable[[Watcher], Awaitable[T]],
        log: logging.Logger,
    ) -> None:
        self._client = client
        self.path = path
        self._read = read
        self._log = log
        self.stale = True
        #: counts what asked for a read (the first read, watch and session events)
        self._asks = Latest(1)
        self._answered = 0  # the count the last completed read was asked by
        self._listening = contextlib.ExitStack()

    async def __aenter__(self) -> Rereads[T]:
        self._listening.enter_context(listening(self._client, self._on_session))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._asks.close()
        self._listening.close()
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(2),
            contextlib.suppress(CoordError),
        ):
            await self._client.remove_watch(self.path, self._on_watch)

    def _ask(self) -> None:
        self._asks.publish(self._asks.value + 1)

    def _on_watch(self, event: WatchEvent) -> None:
        if event.type is not EventType.NONE:  # NONE: the session ended; its successor asks
            self._ask()

    def _on_session(self, event: SessionEvent) -> None:
        if event.state in (SessionState.SUSPENDED, SessionState.LOST):
            if not self.stale:
                self._log.info("%s: view stale (session %s)", self.path, event.state.value)
            self.stale = True
        if event.state in (SessionState.RECONNECTED, SessionState.CONNECTED):
            self._ask()
        elif event.state is SessionState.CLOSED:
            self._asks.close()

    async def next(self) -> T:
        """The result of a read asked for since the last one (waiting for an ask)."""
        client = self._client
        while True:
            ask = await self._asks.wait_newer(self._answered)
            try:
                await client.wait_connected()
                session = client.session_id
                value = await self._read(self._on_watch)
            except ClientClosed:
                raise anyio.EndOfStream from None
            except RETRYABLE as exc:
                self._log.debug("%s: re-reading after %s", self.path, exc)
                await anyio.sleep(0.05)
                continue
            self._answered = ask
            if client.session_id == session and client.state.live:
                self.stale = False
            return value


async def hold_ephemeral(
    client: Client, path: str, data: bytes, *, log: logging.Logger
) -> ZnodeStat:
    """Create the ephemeral ``path`` (and its parents) on this session; return its stat.

    A node already there from another session (our own expired one, or another holder of the
    same name) is waited out, never deleted: it goes with its session. A node of this session
    (a create whose reply was lost) is adopted, with ``data`` written again.
    """
    while True:
        await client.wait_connected()
        session = client.session_id
        try:
            await client.create(path, data, ephemeral=True, makepath=True)
        except NodeExists:
            gone = Wakeup()
            stat = await client.exists(path, watch=gone.watch)
            if stat is None:
                continue
            if stat.ephemeral_owner != session:
                log.info("%s is held by session 0x%x (an earlier run of ours?): waiting for it "
                         "to go", path, stat.ephemeral_owner)  # fmt: skip
                await gone.wait()
                continue
            with contextlib.suppress(CoordError):
                await client.remove_watch(path, gone.watch)
            await client.set(path, data)
        except (ConnectionLoss, RequestTimeout):
            continue  # created or not: the next round finds out
        stat = await client.exists(path)
        if stat is not None and stat.ephemeral_owner == session:
            return stat


@dataclass(frozen=True, slots=True)
class FencingToken:
    """Identifies one hold of a node (a term of leadership, a held lock): the node's creation zxid
    and its path. A later hold has a greater czxid."""

    czxid: int
    path: str


class Fenced:
    """A hold that lasts while the node ``path`` exists as written (``version``): its fencing
    token, why it ended (``lost``), and ``guard(ops)``. Subclasses name the error and the words."""

    #: raised by guard() when the node is gone or changed
    lost_error: ClassVar[type[CoordError]] = CoordError
    #: "<holding> of <path> ends", "no longer <holder>"
    holding: ClassVar[str] = "hold"
    holder: ClassVar[str] = "holder"
    _log: ClassVar[logging.Logger] = logging.getLogger("aiocoord.recipes")

    def __init__(self, client: Client, path: str, czxid: int, version: int) -> None:
        self._client = client
        self.path = path
        self.token = FencingToken(czxid, path)
        self._version = version
        #: why the hold ended, once it has (None while held)
        self.lost: str | None = None
        self._scope: anyio.CancelScope | None = None

    def _end(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            self._log.warning("%s of %s ends: %s", self.holding, self.path, reason)
        if self._scope is not None:
            self._scope.cancel()

    def _release(self) -> None:
        """Ended by its holder, who deletes the node next: the watch firing on that delete is
        expected, not a loss (so no round trip to remove the watch before the delete)."""
        if self.lost is None:
            self.lost = "released"
        self._scope = None

    def _on_node_event(self, event: WatchEvent) -> None:
        # deleted, rewritten, or its session gone: guard() would fail from now on
        self._end(f"node {self.path}: {event.type.name} ({event.state.name})")

    async def _watch_owned(self) -> bool:
        """Watch the node for the hold and check it is this session's; take its czxid and
        version. False (and no watch left) when it is gone or another session's."""
        client = self._client
        stat = await client.exists(self.path, watch=self._on_node_event)
        if stat is None or stat.ephemeral_owner != client.session_id:
            with contextlib.suppress(CoordError):
                await client.remove_watch(self.path, self._on_node_event)
            return False
        self.token = FencingToken(stat.czxid, self.path)
        self._version = stat.version
        self._log.info("%s: held (czxid 0x%x)", self.path, stat.czxid)
        return True

    async def guard(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply ``ops`` atomically, only while the held node exists as written.

        Raises the hold's lost error when the node is gone or changed (a deposed or paused
        holder), ``MultiFailed`` when one of ``ops`` fails, and ``ConnectionLoss`` when the reply
        was lost (the write happened only if the hold still lasted at that moment).
        """
        try:
            results = await self._client.multi([Op.check(self.path, self._version), *ops])
        except MultiFailed as exc:
            if exc.index == 0:
                raise self.lost_error(f"no longer {self.holder}: {self.path} {exc.cause}") from exc
            raise
        except SessionExpired as exc:
            raise self.lost_error(
                f"no longer {self.holder}: session expired ({self.path})"
            ) from exc
        return results[1:]


async def withdraw(client: Client, node: str | None, session: int, *, log: logging.Logger) -> None:
    """Delete our ephemeral ``node`` made on ``session`` at once (resigning a candidacy,
    releasing a lock); nothing when there is none or the session has gone (the node with it).
    Owed when the reply is lost (or this is cancelled): deleted after the reconnect, so a blip
    never leaves a phantom contender ahead of everyone while the session lives on."""
    if node is None or session != client.session_id:
        return
    with anyio.move_on_after(client.negotiated_timeout):
        try:
            if await client.delete_ephemeral(node):
                log.info("deleted %s", node)
            else:
                log.warning("deleting %s: the reply was lost: deleted after the reconnect, or "
                            "with the session", node)  # fmt: skip
        except CoordError as exc:
            log.warning("could not delete %s: %s", node, exc)
