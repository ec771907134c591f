"""Config distribution: a versioned store, watches that apply versions in order, rollout status.

Znode layout (shared with kazoo/zkpython scripts)::

    <path>/conf-<10 digits>       PERSISTENT_SEQUENTIAL, data = the raw config bytes
    <path>-keys/<sha256(key)>     PERSISTENT, one per publish (of its key, or of a random one), made
                                  in the publish's multi(); data: the version, when a key was given
    <path>-status/<host-id>       EPHEMERAL, JSON {version, ok, error, applied_at}

The history path holds only ``conf-`` children: older scripts take the largest child name as the
newest version. Versions beyond ``retention`` are pruned (oldest first).

Single-node mode watches one znode's data instead (e.g. ``/app/business/config``); its version
is the node's mzxid.

A ``ConfigFeed`` yields the newest version each time it is read: it never yields a version older
than (or equal to) one it yielded, skips intermediate versions when its reader is behind, and
always ends on the newest. Ordering is by zxid (czxid of a ``conf-`` node, mzxid of a single
node), so a history path deleted and re-created (sequence numbers restart) still moves forward.

SUSPENDED: the feed is marked ``stale`` (it cannot know it is current); on RECONNECTED it
re-reads (SetWatches restored the watch, and a re-read costs one round trip). LOST: the watches
ended with the session; the feed stays ``stale`` until it has re-read and re-watched on the new
session, so changes made meanwhile (a node deleted and re-created included) are seen.
Cancellation: leaving ``watch()`` removes the feed's watches and listener.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import anyio

from ..transport import codec
from ..transport.client import Client
from ..transport.errors import (
    ClientClosed,
    ConnectionLoss,
    CoordError,
    MultiFailed,
    NodeExists,
    NoNode,
    RequestTimeout,
)
from ..transport.paths import validate_path
from ..transport.types import Op, SessionEvent, SessionState, WatchEvent
from ._session import RETRYABLE, pipelined
from .election import LeadershipLost

if TYPE_CHECKING:
    from .election import Term

__all__ = ["ConfigFeed", "ConfigStore", "ConfigVersion", "HostStatus", "StatusBoard", "watch_node"]

log = logging.getLogger("aiocoord.config")

PREFIX = "conf-"
_CONF = re.compile(r"^conf-(\d{10})$")


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One version of a config.

    ``name``: the version node's name (``conf-0000000003``), or the watched node's path in
    single-node mode. ``number``: the sequence number, or the mzxid in single-node mode.
    ``zxid``: what versions are ordered by (czxid of a ``conf-`` node, mzxid of a single node).
    """

    name: str
    number: int
    data: bytes
    zxid: int


@dataclass(frozen=True, slots=True)
class HostStatus:
    """What one host reports it runs (``<path>-status/<host>``)."""

    host: str
    version: str | None
    ok: bool
    error: str | None
    applied_at: float


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


class StatusBoard:
    """Rollout status: each host's ephemeral ``<path>/<host>`` JSON node."""

    def __init__(self, client: Client, path: str) -> None:
        validate_path(path)
        self._client = client
        self.path = path

    async def report(
        self, host: str, version: str | None, *, ok: bool, error: str | None = None
    ) -> HostStatus:
        """Write (or overwrite) this host's status as an ephemeral node of this session."""
        if not host or "/" in host:
            raise ValueError(f"bad host id {host!r}")
        status = HostStatus(host, version, ok, error, time.time())
        data = codec.dumps(
            {"version": version, "ok": ok, "error": error, "applied_at": status.applied_at}
        )
        node = f"{self.path}/{host}"
        client = self._client
        while True:
            try:
                await client.create(node, data, ephemeral=True, makepath=True)
                return status
            except NodeExists:
                stat = await client.exists(node)
                if stat is None:
                    continue
                if stat.ephemeral_owner != client.session_id:
                    # left by an earlier session of ours (or another process with our id)
                    with contextlib.suppress(NoNode):
                        await client.delete(node)
                    continue
                try:
                    await client.set(node, data)
                    return status
                except NoNode:
                    continue

    async def read(self) -> list[HostStatus]:
        """Every host's status, sorted by host id."""
        try:
            hosts = sorted(await self._client.children(self.path))
        except NoNode:
            return []
        out = []
        for host in hosts:
            try:
                data, stat = await self._client.get(f"{self.path}/{host}")
            except NoNode:
                continue
            try:
                raw = codec.loads_object(data, what=f"status of {host}")
                out.append(
                    HostStatus(
                        host,
                        raw.get("version"),
                        bool(raw.get("ok")),
                        raw.get("error"),
                        float(raw.get("applied_at") or stat.mtime / 1000),
                    )
                )
            except (codec.DecodeError, TypeError, ValueError) as exc:
                out.append(HostStatus(host, None, False, f"unreadable status: {exc}", 0.0))
        return out


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
            return ConfigVersion(path, stat.mzxid, data, stat.mzxid)

    async with ConfigFeed(client, read, path) as feed:
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
        self._dirty = True
        self._wake = anyio.Event()
        self._closed = False

    async def __aenter__(self) -> Self:
        self._client.add_listener(self._on_session)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closed = True
        self._client.remove_listener(self._on_session)
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(2),
            contextlib.suppress(CoordError),
        ):
            await self._client.remove_watch(self.path, self._on_watch)

    def _poke(self) -> None:
        self._dirty = True
        self._wake.set()

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
            self._closed = True
            self._wake.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ConfigVersion:
        client = self._client
        while True:
            while not self._dirty:
                if self._closed:
                    raise StopAsyncIteration
                self._wake = anyio.Event()
                await self._wake.wait()
            self._dirty = False
            try:
                await client.wait_connected()
                session = client.session_id
                version = await self._read(self._on_watch)
            except ClientClosed:
                raise StopAsyncIteration from None
            except RETRYABLE as exc:
                log.debug("%s: re-reading after %s", self.path, exc)
                self._dirty = True
                await anyio.sleep(0.05)
                continue
            if client.session_id == session and client.state.live:
                self.stale = False
            if version is not None and (self.last is None or version.zxid > self.last.zxid):
                self.last = version
                return version
