"""A watch-fed mirror of a subtree (Curator's ``CuratorCache``, kazoo's ``TreeCache``).

Znode layout: none of its own; any subtree ``<path>/...`` (``<path>`` need not exist yet).

``async with TreeCache(client, path) as cache:`` returns once the subtree has been read;
``cache.get(p)`` gives ``(data, stat)`` or None, ``cache.children(p)`` the sorted names or None,
without I/O. ``async for event in cache`` yields ``TreeEvent``: NODE_ADDED for every node found
(parents before children), then INITIALIZED once, then NODE_ADDED, NODE_UPDATED (data changed,
i.e. a new mzxid) and NODE_REMOVED (children before parents) as the subtree changes. A node
deleted and created again between two reads is a new node: REMOVED (with its subtree), then ADDED.

Watches: one-shot data and children watches on every node, set again with every read (the
installed ZooKeeper 3.8 has known bugs in persistent recursive watches, ZOOKEEPER-4466/4471/4472).
A watch firing re-reads that node (and reads the children it did not know), so a burst of changes
costs a read per node, not per change.

Events: latest wins per node, not an unbounded queue. At most one event per node waits for the
reader: a node that changes again before the reader took its event has that event replaced by one
that says where the node stands now (ADDED then UPDATED: ADDED with the new data; ADDED then
REMOVED: nothing, the reader never saw it; REMOVED then ADDED: UPDATED; UPDATED then REMOVED:
REMOVED). So the queue is bounded by the nodes of the tree and of the reader's view of it, a
reader that falls behind still ends on the mirror's state, and the cache never blocks on it.

SUSPENDED: ``stale`` is True (the mirror may be behind). RECONNECTED: the whole subtree is read
again and diffed against the mirror (the client's SetWatches already reports what was missed:
this checks it, and clears ``stale``). LOST: every watch ended with the session; the CONNECTED of
the new session reads the whole subtree again, watching it on the new session, and emits the
events that make the mirror right (nodes deleted meanwhile are REMOVED, nodes deleted and
created again are REMOVED then ADDED). The mirror keeps its last content while stale.
Cancellation: leaving the block (or cancelling it) stops the reads and removes every watch the
cache set, and the session listener (shielded, bounded).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
from dataclasses import dataclass, field
from typing import Self

import anyio
import anyio.abc

from ..transport.client import Client
from ..transport.errors import ClientClosed, CoordError, NoNode
from ..transport.paths import join, parent, validate_path
from ..transport.types import EventType, SessionEvent, SessionState, WatchEvent, ZnodeStat
from ._session import RETRYABLE, Latest, listening, pipelined

__all__ = ["TreeCache", "TreeEvent", "TreeEventType"]

log = logging.getLogger("aiocoord.cache")


def _depth(path: str) -> int:
    return path.count("/")


class TreeEventType(enum.Enum):
    NODE_ADDED = "node_added"
    NODE_UPDATED = "node_updated"
    NODE_REMOVED = "node_removed"
    #: the first read of the subtree is done (once, after its NODE_ADDED events)
    INITIALIZED = "initialized"


@dataclass(frozen=True, slots=True)
class TreeEvent:
    """A change of the mirror. ``data`` and ``stat``: the node's, as added or updated, or as
    last known when removed; None for INITIALIZED (whose ``path`` is the cache's)."""

    type: TreeEventType
    path: str
    data: bytes | None = None
    stat: ZnodeStat | None = None


@dataclass(slots=True)
class _Node:
    data: bytes
    stat: ZnodeStat
    children: set[str] = field(default_factory=set)  # the names mirrored


_ADDED, _UPDATED, _REMOVED = (
    TreeEventType.NODE_ADDED,
    TreeEventType.NODE_UPDATED,
    TreeEventType.NODE_REMOVED,
)


def coalesce(waiting: TreeEvent | None, new: TreeEvent) -> TreeEvent | None:
    """The one event to keep for a node whose ``waiting`` event (not yet taken by the reader) is
    followed by ``new``: what moves the reader's view from before ``waiting`` to after ``new``."""
    if waiting is None:
        return new
    if waiting.type is _ADDED:  # the reader has not seen the node
        return None if new.type is _REMOVED else TreeEvent(_ADDED, new.path, new.data, new.stat)
    if waiting.type is _REMOVED and new.type is _ADDED:  # the reader has the node as it was
        return TreeEvent(_UPDATED, new.path, new.data, new.stat)
    return new


class TreeCache:
    """A mirror of the subtree at ``path``, kept by watches; an async iterator of its changes
    (one reader). ``stale`` is True while the mirror may be behind (the session away, until the
    subtree has been read again)."""

    def __init__(self, client: Client, path: str) -> None:
        validate_path(path)
        self._client = client
        self.path = path
        self.stale = True
        self._nodes: dict[str, _Node] = {}
        self._full = True  # the whole subtree must be read (first read, session back)
        self._pending: dict[str, None] = {}  # nodes whose watch fired, in order
        self._asks = Latest(0)  # counts the watch and session events that ask for reads
        self._blips = 0  # counts SUSPENDED and LOST: a full read spanning one clears nothing
        self._queue: dict[str, TreeEvent] = {}  # at most one event per path
        self._queued = Latest(0)  # counts the events put in the queue
        self._taken = 0
        self._stack = contextlib.AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None

    # -- the mirror (no I/O) -----------------------------------------------------------------
    def get(self, path: str) -> tuple[bytes, ZnodeStat] | None:
        """The mirrored ``(data, stat)`` of ``path``, or None when it is not in the mirror."""
        node = self._nodes.get(path)
        return None if node is None else (node.data, node.stat)

    def children(self, path: str) -> list[str] | None:
        """The mirrored children of ``path``, sorted, or None when it is not in the mirror."""
        node = self._nodes.get(path)
        return None if node is None else sorted(node.children)

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._queued.close)
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._run)
            self._tg = tg
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._stack.__aexit__(None, None, None)

    # -- events ------------------------------------------------------------------------------
    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> TreeEvent:
        while not self._queue:
            try:
                self._taken = await self._queued.wait_newer(self._taken)
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
        return self._queue.pop(next(iter(self._queue)))

    def _emit(self, kind: TreeEventType, path: str, data: bytes, stat: ZnodeStat) -> None:
        kept = coalesce(self._queue.get(path), TreeEvent(kind, path, data, stat))
        if kept is None:
            del self._queue[path]
        else:
            self._queue[path] = kept  # (a waiting node's event keeps its place)
        self._queued.publish(self._queued.value + 1)

    # -- upkeep ------------------------------------------------------------------------------
    def _ask(self) -> None:
        self._asks.publish(self._asks.value + 1)

    def _on_watch(self, event: WatchEvent) -> None:
        if event.type is EventType.NONE:  # the session ended: its successor's CONNECTED asks
            return
        self._pending[event.path] = None
        self._ask()

    def _on_session(self, event: SessionEvent) -> None:
        if event.state in (SessionState.SUSPENDED, SessionState.LOST):
            if not self.stale:
                log.info("%s: mirror stale (session %s)", self.path, event.state.value)
            self.stale = True
            self._blips += 1
        elif event.state in (SessionState.RECONNECTED, SessionState.CONNECTED):
            self._full = True
            self._ask()
        elif event.state is SessionState.CLOSED:
            self._asks.close()
            self._queued.close()

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        client = self._client
        started = False
        asked = 0  # the count of _asks that the last reads answered
        with listening(client, self._on_session):
            try:
                while True:
                    if not (self._full or self._pending):
                        asked = await self._asks.wait_newer(asked)
                    full, pending = self._full, self._pending
                    self._full, self._pending = False, {}
                    blips = self._blips
                    try:
                        await client.wait_connected()
                        session = client.session_id
                        if full:
                            await self._read_tree(self.path, everything=True)
                        else:
                            # ancestors first: a parent deleted and made again is replaced
                            # (its old subtree dropped) before its children are read
                            for path in sorted(pending, key=_depth):
                                await self._read_tree(path, everything=False)
                    except RETRYABLE as exc:
                        log.debug("%s: reading again after %s", self.path, exc)
                        self._full |= full
                        self._pending.update(pending)
                        await anyio.sleep(0.05)
                        continue
                    if full and self._blips == blips and client.session_id == session:
                        self.stale = False
                    if not started:
                        started = True
                        self._queue.setdefault("", TreeEvent(TreeEventType.INITIALIZED, self.path))
                        self._queued.publish(self._queued.value + 1)
                        task_status.started()
            except (ClientClosed, anyio.EndOfStream):
                if not started:
                    raise
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._unwatch()

    async def _unwatch(self) -> None:
        client, watch = self._client, self._on_watch

        async def remove(path: str) -> None:
            with contextlib.suppress(CoordError):
                await client.remove_watch(path, watch)

        # our watches are on the mirrored nodes and the top (the watches of nodes gone from the
        # mirror fired when they went)
        paths = {self.path, *self._nodes, *self._pending}
        await pipelined([functools.partial(remove, path) for path in sorted(paths)])

    async def _read_tree(self, top: str, *, everything: bool) -> None:
        """Read ``top`` and the nodes under it the mirror does not have (``everything``: all of
        them), diffing each against the mirror."""
        todo = [top]
        while todo:
            path = todo.pop()
            if path != self.path and parent(path) not in self._nodes:
                continue  # under a node gone from the mirror: not ours to watch any more
            todo.extend(await self._read_node(path, everything))

    async def _read_node(self, path: str, everything: bool) -> list[str]:
        """Read ``path`` (data and children, watching both) into the mirror; the children to
        read next."""
        client, watch = self._client, self._on_watch
        try:
            data, stat = await client.get(path, watch=watch)
            names = await client.children(path, watch=watch)
        except NoNode:
            self._remove(path)
            if path == self.path and await client.exists(path, watch=watch) is not None:
                self._pending[path] = None  # created meanwhile
            return []
        node = self._nodes.get(path)
        if (node is None or node.stat.czxid != stat.czxid) and path != self.path:
            # a node new to the mirror: its parent may have been made again too (events not
            # yet here): then the parent goes first, or the new node would join the old parent
            # and be dropped with it (reported removed while it lives)
            mirrored, up = self._nodes[parent(path)], await client.exists(parent(path))
            if up is None or up.czxid != mirrored.stat.czxid:
                return await self._read_node(parent(path), True)
        if node is not None and node.stat.czxid != stat.czxid:
            self._remove(path)  # deleted and created again: another node
            node = None
        if node is None:
            node = self._nodes[path] = _Node(data, stat)
            if path != self.path:
                self._nodes[parent(path)].children.add(path.rsplit("/", 1)[1])
            self._emit(_ADDED, path, data, stat)
        else:
            changed = node.stat.mzxid != stat.mzxid
            node.data, node.stat = data, stat
            if changed:
                self._emit(_UPDATED, path, data, stat)
        current = set(names)
        for name in sorted(node.children - current):
            self._remove(join(path, name))
        wanted = current if everything else current - node.children
        return [join(path, name) for name in sorted(wanted, reverse=True)]

    def _remove(self, path: str) -> None:
        """Drop ``path`` and its subtree from the mirror, children first."""
        node = self._nodes.get(path)
        if node is None:
            return
        for name in sorted(node.children):
            self._remove(join(path, name))
        del self._nodes[path]
        if path != self.path:
            up = self._nodes.get(parent(path))
            if up is not None:
                up.children.discard(path.rsplit("/", 1)[1])
        self._emit(_REMOVED, path, node.data, node.stat)
