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

from ...transport.client import Client, Watcher
from ...transport.paths import validate_path
from ...transport.types import ZnodeStat
from .._session import Rereads
from ..watchers import read_data

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

    async def read(watch: Watcher) -> ConfigVersion | None:
        node = await read_data(client, path, watch)
        if node is None:
            return None
        data, stat = node
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
        read: Callable[[Watcher], Awaitable[ConfigVersion | None]],
        path: str,
    ) -> None:
        self.path = path
        self.last: ConfigVersion | None = None
        self._rereads = Rereads(client, path, read, log)

    @property
    def stale(self) -> bool:
        return self._rereads.stale

    async def __aenter__(self) -> Self:
        await self._rereads.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._rereads.__aexit__(*exc_info)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ConfigVersion:
        while True:
            try:
                version = await self._rereads.next()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            if version is not None and (self.last is None or version.zxid > self.last.zxid):
                self.last = version
                return version
