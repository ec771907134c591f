"""What the recipes share about the session: which errors a retry after reconnecting cures, and
holding an ephemeral node that a previous session of ours may still hold."""

from __future__ import annotations

import contextlib
import logging

import anyio

from ..transport.client import Client
from ..transport.errors import (
    ConnectionLoss,
    CoordError,
    NodeExists,
    RequestTimeout,
    SessionExpired,
)
from ..transport.types import WatchEvent, ZnodeStat

#: errors after which the recipes wait for the session and try again
RETRYABLE = (ConnectionLoss, RequestTimeout, SessionExpired)


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
            gone = anyio.Event()

            def on_change(_event: WatchEvent, gone: anyio.Event = gone) -> None:
                gone.set()

            stat = await client.exists(path, watch=on_change)
            if stat is None:
                continue
            if stat.ephemeral_owner != session:
                log.info("%s is held by session 0x%x (an earlier run of ours?): waiting for it "
                         "to go", path, stat.ephemeral_owner)  # fmt: skip
                await gone.wait()
                continue
            with contextlib.suppress(CoordError):
                await client.remove_watch(path, on_change)
            await client.set(path, data)
        except (ConnectionLoss, RequestTimeout):
            continue  # created or not: the next round finds out
        stat = await client.exists(path)
        if stat is not None and stat.ephemeral_owner == session:
            return stat
