"""Data and children watches of one znode as async iterators, latest wins (kazoo's ``DataWatch``
and ``ChildrenWatch``, Curator's ``NodeCache`` and ``PathChildrenCache`` without the data).

Znode layout: none of their own; any node ``<path>`` (which need not exist yet).

``async with DataWatch(client, path) as watch: async for node in watch`` yields the node's
``(data, stat)``, or None while it does not exist (kazoo calls its function with ``None, None``
then): first the current state, then each newer one. ``ChildrenWatch`` yields the sorted names of
the children ([] while ``<path>`` does not exist; a parent deleted and created again is watched
on). Latest wins: a reader that falls behind a burst of changes is given the newest state once,
never the ones in between, and never the same state twice in a row. The reads are one-shot
watches, set again with every read (``_session.Rereads``).

SUSPENDED: ``stale`` is True (the view may be behind). RECONNECTED: re-read (the client's
SetWatches already brings the changes missed; the read checks, and clears ``stale``). LOST: the
watches ended with the session; the CONNECTED of the new session re-reads and re-watches, so a
change made meanwhile (a node deleted and re-created with other data included) is yielded.
Cancellation: leaving the block (or cancelling it) removes the watches and the session listener.
"""

from __future__ import annotations

import logging
from typing import Generic, Self, TypeVar

import anyio

from ..transport.client import Client, Watcher
from ..transport.errors import NoNode
from ..transport.paths import validate_path
from ..transport.types import ZnodeStat
from ._session import Rereads

__all__ = ["ChildrenWatch", "DataWatch", "read_children", "read_data"]

log = logging.getLogger("aiocoord.watchers")

T = TypeVar("T")


async def read_data(client: Client, path: str, watch: Watcher) -> tuple[bytes, ZnodeStat] | None:
    """``path``'s data and stat with a data watch, or None with a watch for its creation."""
    while True:
        try:
            return await client.get(path, watch=watch)
        except NoNode:
            if await client.exists(path, watch=watch) is None:
                return None  # (created between the two reads: read it)


async def read_children(client: Client, path: str, watch: Watcher) -> list[str] | None:
    """``path``'s children, sorted, with a children watch, or None with a watch for its
    creation."""
    while True:
        try:
            return sorted(await client.children(path, watch=watch))
        except NoNode:
            if await client.exists(path, watch=watch) is None:
                return None


class _NodeWatch(Generic[T]):
    """What both watches share: the re-reads, and yielding only a state unlike the last."""

    def __init__(self, client: Client, path: str) -> None:
        validate_path(path)
        self._client = client
        self.path = path
        self._rereads: Rereads[T] = Rereads(client, path, self._read, log)
        self._last: tuple[T] | None = None  # the state yielded last, once there is one

    async def _read(self, watch: Watcher) -> T:
        raise NotImplementedError

    @property
    def stale(self) -> bool:
        """True until the first read, and from SUSPENDED or LOST until re-read."""
        return self._rereads.stale

    async def __aenter__(self) -> Self:
        await self._rereads.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._rereads.__aexit__(*exc_info)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        while True:
            try:
                state = await self._rereads.next()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            if self._last is None or self._last[0] != state:
                self._last = (state,)
                return state


class DataWatch(_NodeWatch[tuple[bytes, ZnodeStat] | None]):
    """``path``'s ``(data, stat)`` as it changes, None while the node does not exist. A node
    deleted and created again, even with the same data, is a new state (its stat differs)."""

    async def _read(self, watch: Watcher) -> tuple[bytes, ZnodeStat] | None:
        return await read_data(self._client, self.path, watch)


class ChildrenWatch(_NodeWatch[list[str]]):
    """``path``'s children, sorted, as they change; [] while ``path`` does not exist."""

    async def _read(self, watch: Watcher) -> list[str]:
        return await read_children(self._client, self.path, watch) or []
