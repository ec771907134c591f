"""The config store: a versioned history of raw config bytes, idempotent publishes, pruning.

Znode layout::

    <path>/conf-<10 digits>       PERSISTENT_SEQUENTIAL, data = the raw config bytes
    <path>-keys/<sha256(key)>     PERSISTENT, one per publish (of its key, or of a random one), made
                                  in the publish's multi(); data: the version, when a key was given

The history path holds only ``conf-`` children: older scripts take the largest child name as the
newest version. Versions beyond ``retention`` are pruned (oldest first) after publishes.

SUSPENDED and LOST: a publish whose outcome is unknown waits for a serving session (a new one
too) and sends the same transaction again, which publishes or finds its key: one version either
way. Reads raise the client's errors. Cancellation: a cancelled publish was applied or not; a
retry with the same key finds out.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from ...transport.client import Client
from ...transport.errors import (
    ConnectionLoss,
    MultiFailed,
    NodeExists,
    NoNode,
    RequestTimeout,
)
from ...transport.paths import validate_path
from ...transport.types import Op, WatchEvent
from .._session import RETRYABLE, pipelined
from ..election import LeadershipLost
from .feed import ConfigFeed, ConfigVersion
from .status import StatusBoard

if TYPE_CHECKING:
    from ..election import Term

__all__ = ["ConfigStore"]

log = logging.getLogger("aiocoord.config")

PREFIX = "conf-"
_CONF = re.compile(r"^conf-(\d{10})$")


def _version_name(version: int | str) -> str:
    if isinstance(version, int):
        if not 0 <= version < 10**10:
            raise ValueError(f"version number out of range: {version}")
        return f"{PREFIX}{version:010d}"
    if not _CONF.match(version):
        raise ValueError(f"not a version name: {version!r} (expected conf-<10 digits>)")
    return version


def _key_node(keys: str, key: str) -> str:
    return f"{keys}/{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def _newest(names: Sequence[str]) -> str | None:
    versions = [n for n in names if _CONF.match(n)]
    return max(versions) if versions else None  # zero-padded: the largest name is the newest


class ConfigStore:
    """A config's version history at ``path`` (``conf-<10 digits>`` nodes, raw bytes).

    ``retention``: how many versions are kept (older ones are pruned after publishes).
    """

    def __init__(self, client: Client, path: str, *, retention: int = 100) -> None:
        validate_path(path)
        if path == "/":
            raise ValueError("the config history cannot be the root node")
        if retention < 1:
            raise ValueError("retention must be at least 1")
        self._client = client
        self.path = path.rstrip("/")
        self.retention = retention
        self.status = StatusBoard(client, f"{self.path}-status")
        self._keys = f"{self.path}-keys"
        self._prune_every = max(1, retention // 10)
        self._pruning = False

    # -- writing ---------------------------------------------------------------------------
    async def publish(
        self, data: bytes, *, key: str | None = None, term: Term | None = None
    ) -> str:
        """Store ``data`` as the new newest version; returns its name (``conf-0000000007``).

        ``key``: an idempotency key: publishing twice with one key makes one version (the
        second call returns the first's name), so a publish whose reply was lost can be retried.
        ``term``: publish only while this leadership term holds (``LeadershipLost`` otherwise).

        A lost reply never makes two versions: every publish creates its key node
        (``<path>-keys/<sha256>``: of ``key``, or of a random one) in the same multi() as the
        version, and when the outcome is unknown (``ConnectionLoss``, ``RequestTimeout``) the same
        multi() is sent again once the session serves (a new session too: the key node is
        persistent). It publishes (the first try was not applied) or finds the key (it was: that
        version's name is returned). So this call waits through a disconnection: bound it with
        ``anyio.fail_after``. The cost: one more create in the same transaction, and the key
        nodes pruned with the versions.
        """
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"config data must be bytes, not {type(data).__name__}")
        labelled = key is not None  # a caller's key is labelled with its version, for later
        key_node = _key_node(self._keys, key if key is not None else uuid.uuid4().hex)
        ops = [
            Op.create(key_node),
            Op.create(f"{self.path}/{PREFIX}", bytes(data), sequential=True),
        ]
        client = self._client
        made_paths = unknown = False
        while True:
            try:
                results = await (term.guard(ops) if term is not None else client.multi(ops))
                break
            except MultiFailed as exc:
                if isinstance(exc.cause, NodeExists) and exc.cause.path == key_node:
                    return await self._published_with(key_node)  # published already (by us?)
                if isinstance(exc.cause, NoNode) and not made_paths:
                    made_paths = True
                    await client.ensure_path(self.path)
                    await client.ensure_path(self._keys)
                    continue
                raise
            except (ConnectionLoss, RequestTimeout) as exc:
                # applied or not: the same transaction again publishes or finds the key
                log.info(
                    "%s: outcome of a publish unknown (%s: %s): sending it again",
                    self.path,
                    type(exc).__name__,
                    exc,
                )
                unknown = True
                await client.wait_connected()
            except LeadershipLost:
                # the term ended; an earlier try whose reply was lost may have been applied
                # while it held: then that version stands
                if unknown and await client.exists(key_node) is not None:
                    return await self._published_with(key_node)
                raise
        name = results[-1].path.rsplit("/", 1)[1]  # type: ignore[union-attr]
        if labelled:
            # optional (_published_with finds an unlabelled key's version by its czxid): a lost
            # reply here does not fail a publish that happened
            with contextlib.suppress(NoNode, *RETRYABLE):
                await client.set(key_node, name.encode())
        log.info("%s: published %s (%d bytes)", self.path, name, len(data))
        if int(name[len(PREFIX) :]) % self._prune_every == 0 and not self._pruning:
            self._pruning = True  # one prune at a time per store: concurrent ones collide
            try:
                await self.prune()
            finally:
                self._pruning = False
        return name

    async def _published_with(self, key_node: str) -> str:
        """The name of the version published with ``key_node`` (NoNode once pruned)."""
        data, stat = await self._client.get(key_node)
        if data:
            return data.decode()
        # an unlabelled key: its version was created in the same transaction (the same zxid).
        # Versions are numbered in zxid order: from the newest down to the first older one.
        for name in reversed(await self._versions()):
            found = await self._client.exists(f"{self.path}/{name}")
            if found is None:
                continue
            if found.czxid == stat.czxid:
                return name
            if found.czxid < stat.czxid:
                break
        raise NoNode(f"the version published with {key_node} was pruned", path=key_node)

    async def rollback(self, version: int | str, *, term: Term | None = None) -> str:
        """Republish an old version's bytes as a new version; returns the new version's name."""
        old = await self.get(version)
        log.info("%s: rolling back to %s", self.path, old.name)
        return await self.publish(old.data, term=term)

    async def prune(self) -> int:
        """Delete the versions beyond ``retention`` (and their idempotency keys); returns how
        many versions were deleted."""
        names = await self._versions()
        old = names[: -self.retention]
        await self._delete_all([f"{self.path}/{name}" for name in old])
        if old:
            log.debug("%s: pruned %d versions", self.path, len(old))
            await self._prune_keys(f"{self.path}/{names[-self.retention]}")
        return len(old)

    async def _delete_all(self, nodes: Sequence[str]) -> None:
        client = self._client
        for start in range(0, len(nodes), 100):
            batch = nodes[start : start + 100]
            try:  # one transaction per batch
                await client.multi([Op.delete(node) for node in batch])
            except MultiFailed:  # someone else pruned some of them: one by one
                for node in batch:
                    with contextlib.suppress(NoNode):
                        await client.delete(node)

    async def _prune_keys(self, oldest_kept: str) -> None:
        """Delete the keys older than the oldest kept version. Every publish has one: they are
        pruned once there are twice ``retention`` (so their stats, read pipelined, cost about two
        reads per publish), and deleted in batches."""
        client = self._client
        try:
            keys = await client.children(self._keys)
        except NoNode:
            return
        if len(keys) <= 2 * self.retention:
            return
        kept = await client.exists(oldest_kept)
        if kept is None:
            return
        nodes = [f"{self._keys}/{key}" for key in keys]
        stats = await pipelined([functools.partial(client.exists, node) for node in nodes])
        old = [n for n, stat in zip(nodes, stats, strict=True) if stat and stat.czxid < kept.czxid]
        await self._delete_all(old)

    # -- reading ---------------------------------------------------------------------------
    async def _versions(self) -> list[str]:
        """The names of the kept versions, oldest first."""
        try:
            return sorted(n for n in await self._client.children(self.path) if _CONF.match(n))
        except NoNode:
            return []

    async def current(self) -> ConfigVersion | None:
        """The newest version, or None when nothing was published."""
        return await _read_newest(self._client, self.path, None)

    async def get(self, version: int | str) -> ConfigVersion:
        """One version by number or name (``NoNode`` when it does not exist or was pruned)."""
        name = _version_name(version)
        data, stat = await self._client.get(f"{self.path}/{name}")
        return ConfigVersion(name, int(name[len(PREFIX) :]), data, stat.czxid)

    async def history(self) -> list[ConfigVersion]:
        """Every kept version, oldest first."""
        out = []
        for name in await self._versions():
            with contextlib.suppress(NoNode):
                out.append(await self.get(name))
        return out

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[ConfigFeed]:
        """``async with store.watch() as feed: async for version in feed``: the newest version
        now (once there is one), then each newer one."""

        async def read(watch: Callable[[WatchEvent], object]) -> ConfigVersion | None:
            return await _read_newest(self._client, self.path, watch)

        async with ConfigFeed(self._client, read, self.path) as feed:
            yield feed


async def _read_newest(
    client: Client, path: str, watch: Callable[[WatchEvent], object] | None
) -> ConfigVersion | None:
    while True:
        try:
            names = await client.children(path, watch=watch)
        except NoNode:
            if await client.exists(path, watch=watch) is None:
                return None
            continue
        newest = _newest(names)
        if newest is None:
            return None
        try:
            data, stat = await client.get(f"{path}/{newest}")
        except NoNode:  # pruned or deleted between the two reads
            continue
        return ConfigVersion(newest, int(newest[len(PREFIX) :]), data, stat.czxid)
