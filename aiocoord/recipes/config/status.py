"""Rollout status: which host runs which version of a config.

Znode layout::

    <path>-status/<host-id>       EPHEMERAL, JSON {version, ok, error, applied_at}

(a sibling of the history path, which holds only ``conf-`` nodes). SUSPENDED: nothing to do (the
node lives while the session does). LOST: the node went with the session; the host's next
``report()`` writes it again (a node left by an earlier session of ours is replaced).
Cancellation: a cancelled ``report()`` leaves the node as the server has it.

``wait_applied(version, hosts)`` waits, watch-fed, until that many hosts report the version (or a
newer one) applied; it reads again after a reconnect or a lost session (its watches fire), and
leaves no watch behind when it returns or is cancelled.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass

import anyio

from ...transport import codec
from ...transport.client import Client
from ...transport.errors import CoordError, NodeExists, NoNode
from ...transport.paths import validate_path
from ...transport.types import ZnodeStat
from .._session import RETRYABLE, Wakeup

__all__ = ["HostStatus", "StatusBoard"]


@dataclass(frozen=True, slots=True)
class HostStatus:
    """What one host reports it runs (``<path>-status/<host>``)."""

    host: str
    version: str | None
    ok: bool
    error: str | None
    applied_at: float


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
        return await self._read(None, [])

    async def _read(self, wakeup: Wakeup | None, watched: list[str]) -> list[HostStatus]:
        """Every host's status; with ``wakeup``, watching the list and each status (the paths
        watched go to ``watched``)."""
        watch = wakeup.watch if wakeup is not None else None
        watched.append(self.path)
        try:
            hosts = sorted(await self._client.children(self.path, watch=watch))
        except NoNode:
            if wakeup is not None and await self._client.exists(self.path, watch=watch):
                return await self._read(wakeup, watched)  # created meanwhile
            return []
        out = []
        for host in hosts:
            watched.append(f"{self.path}/{host}")
            try:
                data, stat = await self._client.get(f"{self.path}/{host}", watch=watch)
            except NoNode:
                continue
            out.append(_parse(host, data, stat))
        return out

    @staticmethod
    def applied(statuses: list[HostStatus], version: str) -> list[HostStatus]:
        """The statuses that report ``version`` (or a newer ``conf-`` version) applied."""
        return [s for s in statuses if _is_applied(s, version)]

    @staticmethod
    def behind(statuses: list[HostStatus], version: str) -> list[HostStatus]:
        """The statuses that do not report ``version`` (or a newer one) applied."""
        return [s for s in statuses if not _is_applied(s, version)]

    async def wait_applied(self, version: str, hosts: int) -> list[HostStatus]:
        """Wait until at least ``hosts`` hosts report ``version`` (or a newer ``conf-`` version)
        applied, and return their statuses. Unbounded: wrap it in ``anyio.fail_after``; then
        ``read()`` and ``behind()`` tell who is not there yet."""
        client = self._client
        while True:
            wakeup, watched = Wakeup(), list[str]()
            try:
                # (a change made while disconnected fires the watch on the reconnect; a lost
                # session ends every watch with an EXPIRED event: both wake this to read again)
                await client.wait_connected()
                done = self.applied(await self._read(wakeup, watched), version)
                if len(done) >= hosts:
                    return done
                await wakeup.wait()
            except RETRYABLE:
                continue
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    for path in dict.fromkeys(watched):  # a fired watch is gone: NoWatcher,
                        with contextlib.suppress(CoordError):  # raised without a round trip
                            await client.remove_watch(path, wakeup.watch)


_VERSION = re.compile(r"conf-(\d{10})")


def _number(version: str | None) -> int | None:
    match = _VERSION.fullmatch(version or "")
    return int(match.group(1)) if match else None


def _is_applied(status: HostStatus, version: str) -> bool:
    """Whether ``status`` reports ``version``, or a newer ``conf-`` version, applied (ok)."""
    if not status.ok or status.version is None:
        return False
    mine, wanted = _number(status.version), _number(version)
    if mine is None or wanted is None:
        return status.version == version
    return mine >= wanted


def _parse(host: str, data: bytes, stat: ZnodeStat) -> HostStatus:
    """A host's status as written; one of another shape (any client may write there) is an
    unreadable one, never taken for applied: ``ok`` must be ``true``, not ``"false"``."""
    try:
        raw = codec.loads_object(data, what=f"status of {host}")
        version, ok, error = raw.get("version"), raw.get("ok"), raw.get("error")
        if not (version is None or isinstance(version, str)):
            raise TypeError(f"version {version!r} is not a string")
        if not isinstance(ok, bool):
            raise TypeError(f"ok {ok!r} is not true or false")
        if not (error is None or isinstance(error, str)):
            raise TypeError(f"error {error!r} is not a string")
        return HostStatus(
            host, version, ok, error, float(raw.get("applied_at") or stat.mtime / 1000)
        )
    except (codec.DecodeError, TypeError, ValueError) as exc:
        return HostStatus(host, None, False, f"unreadable status: {exc}", 0.0)
