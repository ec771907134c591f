"""aclose() of a client never entered; an "expired" answer to a brand-new session."""

from __future__ import annotations

import asyncio
import struct

import pytest

from aiocoord import Client, ConnectError


async def test_aclose_of_a_client_never_entered() -> None:
    zk = Client("127.0.0.1:1")
    await zk.aclose()  # AssertionError in Session._announce (self._live is None)


async def test_expired_answer_to_a_new_session_backs_off() -> None:
    conns = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        try:
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            await reader.readexactly(size)
            record = struct.pack(">iiqi", 0, 0, 0, 16) + bytes(16) + b"\0"  # timeout 0: expired
            writer.write(struct.pack(">i", len(record)) + record)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectError):
            async with Client(f"127.0.0.1:{port}", session_timeout=10, connect_timeout=1):
                pass
    finally:
        server.close()
        await server.wait_closed()
    # backoff from 0.05 s doubling: a handful of attempts in one second, not hundreds
    assert conns < 20, conns
