"""Config feeds: the versions of one config as an async iterator, latest wins, never backwards.

A ``ConfigFeed`` (from ``ConfigStore.watch()``, or ``watch_node()`` for one znode) yields the
newest version each time it is read: it never yields a version older than (or equal to) one it
yielded, skips intermediate versions when its reader is behind, and always ends on the newest.
Ordering is by zxid (czxid of a ``conf-`` node, mzxid of a single node), so a history path deleted
and re-created (sequence numbers restart) still moves forward.

SUSPENDED: the feed is marked ``stale`` (it cannot know it is current); on RECONNECTED it
re-reads (SetWatches restored the watch, and a re-read costs one round trip). LOST: the watches
ended with the session; the feed stays ``stale`` until it has re-read and re-watched on the new
session, so changes made meanwhile (a node deleted and re-created included) are seen.
Cancellation: leaving the feed's block removes its watches and listener.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Self

import anyio

from ...transport.client import Client
from ...transport.errors import ClientClosed, CoordError, NoNode
from ...transport.paths import validate_path
from ...transport.types import SessionEvent, SessionState, WatchEvent, ZnodeStat
from .._session import RETRYABLE, Latest, listening

__all__ = ["ConfigFeed", "ConfigVersion", "watch_node"]

log = logging.getLogger("aiocoord.config")


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One version of a config.

    ``name``: the version node's name (``conf-0000000003``), or the watched node's path in
    single-node mode. ``number``: the sequence number, or the mzxid in single-node mode.
    ``zxid``: what versions are ordered by (czxid of a ``conf-`` node, mzxid of a single node).
    ``stat``: the node's Stat in single-node mode (its data ``version`` for a conditional set),
    else None.
    """

    name: str
    number: int
    data: bytes
    zxid: int
    stat: ZnodeStat | None = None


@contextlib.asynccontextmanager
async def watch_node(client: Client, path: str) -> AsyncIterator[ConfigFeed]:
    """Single-node mode: ``async with watch_node(client, path) as feed: async for v in feed``
    yields the node's data each time it changes (version = mzxid). A deleted node yields
    nothing until it is created again."""
    validate_path(path)

    async def read(watch: Callable[[WatchEvent], object]) -> ConfigVersion | None:
        while True:
            try:
                data, stat = await client.get(path, watch=watch)
            except NoNode:
                if await client.exists(path, watch=watch) is None:
                    return None
                continue
            return ConfigVersion(path, stat.mzxid, data, stat.mzxid, stat)

    async with ConfigFeed(client, read, path) as feed:
        yield feed


class ConfigFeed:
    """Versions of one config as an async iterator (from ``ConfigStore.watch()`` or
    ``watch_node()``): latest wins, never backwards.

    ``stale`` is True until the first read and whenever the session is suspended or lost, until
    the feed has re-read on a live session. ``last`` is the newest version yielded.
    """

    def __init__(
        self,
        client: Client,
        read: Callable[[Callable[[WatchEvent], object]], Awaitable[ConfigVersion | None]],
        path: str,
    ) -> None:
        self._client = client
        self._read = read
        self.path = path
        self.stale = True
        self.last: ConfigVersion | None = None
        #: counts what asks for a read (the first read, watch and session events): a burst of
        #: them costs one read
        self._changes = Latest(1)
        self._covered = 0  # the count the last completed read was asked by
        self._listening = contextlib.ExitStack()

    async def __aenter__(self) -> Self:
        self._listening.enter_context(listening(self._client, self._on_session))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._changes.close()
        self._listening.close()
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(2),
            contextlib.suppress(CoordError),
        ):
            await self._client.remove_watch(self.path, self._on_watch)

    def _poke(self) -> None:
        self._changes.publish(self._changes.value + 1)

    def _on_watch(self, _event: WatchEvent) -> None:
        self._poke()

    def _on_session(self, event: SessionEvent) -> None:
        if event.state in (SessionState.SUSPENDED, SessionState.LOST):
            if not self.stale:
                log.info("%s: config view stale (session %s)", self.path, event.state.value)
            self.stale = True
        if event.state in (SessionState.RECONNECTED, SessionState.CONNECTED):
            self._poke()
        elif event.state is SessionState.CLOSED:
            self._changes.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ConfigVersion:
        client = self._client
        while True:
            try:
                change = await self._changes.wait_newer(self._covered)
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            try:
                await client.wait_connected()
                session = client.session_id
                version = await self._read(self._on_watch)
            except ClientClosed:
                raise StopAsyncIteration from None
            except RETRYABLE as exc:
                log.debug("%s: re-reading after %s", self.path, exc)
                await anyio.sleep(0.05)
                continue
            self._covered = change
            if client.session_id == session and client.state.live:
                self.stale = False
            if version is not None and (self.last is None or version.zxid > self.last.zxid):
                self.last = version
                return version
