"""Rollout status: which host runs which version of a config.

Znode layout::

    <path>-status/<host-id>       EPHEMERAL, JSON {version, ok, error, applied_at}

(a sibling of the history path, which holds only ``conf-`` nodes). SUSPENDED: nothing to do (the
node lives while the session does). LOST: the node went with the session; the host's next
``report()`` writes it again (a node left by an earlier session of ours is replaced).
Cancellation: a cancelled ``report()`` leaves the node as the server has it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from ...transport import codec
from ...transport.client import Client
from ...transport.errors import NodeExists, NoNode
from ...transport.paths import validate_path

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
