"""A connection that dies while it is being installed (an early frame that is malformed) must not
swallow the requests queued for the reconnect, nor leave the client announced as live."""

from __future__ import annotations

import asyncio
import struct

import anyio

from aiocoord import Client, SessionState
from aiocoord.testing import reply_frame

SID = 0x1234
PASSWD = bytes(range(16))


def _handshake(timeout_ms: int) -> bytes:
    record = struct.pack(">iiqi", 0, timeout_ms, SID, len(PASSWD)) + PASSWD + b"\0"
    return struct.pack(">i", len(record)) + record


async def _frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def test_queued_request_survives_a_connection_dying_at_install() -> None:
    conns = 0
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        n = conns
        writers.append(writer)
        try:
            (timeout_ms,) = struct.unpack_from(">i", await _frame(reader), 12)
            out = _handshake(timeout_ms)
            if n == 2:
                out += struct.pack(">i", 4) + b"\0\0\0\0"  # a short frame right behind it
            writer.write(out)
            while True:
                frame = await _frame(reader)
                xid, op = struct.unpack_from(">ii", frame)
                if xid == -2 or op == -11:
                    writer.write(reply_frame(xid, 0, 0))
                elif op == 3:  # exists: NoNode
                    writer.write(reply_frame(xid, 1, -101))
        except (OSError, asyncio.IncompleteReadError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            Client(
                f"127.0.0.1:{port}", session_timeout=10, request_timeout=3, reconnect_delay=0
            ) as zk,
            zk.session_events() as feed,
        ):
            writers[0].transport.abort()  # drop connection 1: the client reconnects
            with anyio.fail_after(5):
                async for ev in feed:
                    if ev.state is SessionState.SUSPENDED:
                        break
            # queued while suspended: sent on connection 2 (which dies at install), then must be
            # sent again on connection 3, or at least fail by its 3 s deadline
            with anyio.fail_after(8):
                assert await zk.exists("/x") is None
    finally:
        server.close()
        for w in writers:
            w.transport.abort()
        await asyncio.sleep(0.05)
