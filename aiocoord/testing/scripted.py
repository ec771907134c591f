"""A scripted ZooKeeper-protocol server, for replies a real server never sends (truncated or
malformed frames, hang-ups inside the handshake).

``async with ScriptedServer(script) as srv: srv.address`` -- every connection gets a valid
ConnectResponse, then ``script(xid, opcode, body)`` (sync or async) is called for each request
frame and the bytes it returns are written back as they are (build them with ``reply_frame``).
It returns None for the default: pings (xid -2) get a ping reply, closeSession gets its reply
and a hang-up, anything else gets nothing; ``b""`` sends nothing, even to a ping.
"""

from __future__ import annotations

import asyncio
import inspect
import struct
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import NamedTuple, Self

__all__ = ["ConnectRequest", "Script", "ScriptedServer", "reply_frame"]

#: ``script(xid, opcode, body)``: the bytes to write back, or None for the default
Script = Callable[[int, int, bytes], Awaitable[bytes | None] | bytes | None]

_PING_XID, _OP_CLOSE = -2, -11


def reply_frame(xid: int, zxid: int, err: int, body: bytes = b"") -> bytes:
    """A length-prefixed reply: header (int xid, long zxid, int err), then ``body`` as given."""
    payload = struct.pack(">iqi", xid, zxid, err) + body
    return struct.pack(">i", len(payload)) + payload


class ConnectRequest(NamedTuple):
    protocol_version: int
    last_zxid_seen: int
    timeout_ms: int
    session_id: int
    passwd: bytes
    read_only: bool


def _parse_connect(record: bytes) -> ConnectRequest:
    version, zxid, timeout_ms, session_id, size = struct.unpack_from(">iqiqi", record)
    passwd = record[28 : 28 + max(size, 0)]
    read_only = len(record) > 28 + max(size, 0) and record[28 + max(size, 0)] != 0
    return ConnectRequest(version, zxid, timeout_ms, session_id, passwd, read_only)


class ScriptedServer:
    """A loopback server on a free port; ``connections`` counts accepted connections and
    ``connect_requests`` holds every ConnectRequest read. An exception raised by the script
    closes that connection and is raised again when the ``async with`` block ends."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        close_after_handshake: bool = False,
        die_inside_handshake: bool = False,
        session_id: int = 0x1234,
        passwd: bytes = bytes(range(16)),
    ) -> None:
        self.script = script
        self.close_after_handshake = close_after_handshake
        self.die_inside_handshake = die_inside_handshake
        self.session_id = session_id
        self.passwd = passwd
        self.port = 0
        self.connections = 0
        self.connect_requests: list[ConnectRequest] = []
        self.errors: list[BaseException] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if exc is None and self.errors:
            raise self.errors[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client hung up
        except Exception as e:
            self.errors.append(e)
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = _parse_connect(await _read_frame(reader))
        self.connect_requests.append(request)
        record = struct.pack(">iiqi", 0, request.timeout_ms, self.session_id, len(self.passwd))
        response = struct.pack(">i", len(record) + len(self.passwd) + 1)
        response += record + self.passwd + b"\0"
        if self.die_inside_handshake:
            response = response[: len(response) // 2]
        writer.write(response)
        await writer.drain()
        if self.die_inside_handshake or self.close_after_handshake:
            return
        while True:
            frame = await _read_frame(reader)
            xid, opcode = struct.unpack_from(">ii", frame)
            reply = self.script(xid, opcode, frame[8:]) if self.script is not None else None
            if inspect.isawaitable(reply):
                reply = await reply
            if reply is None and (xid == _PING_XID or opcode == _OP_CLOSE):
                reply = reply_frame(xid, 0, 0)
            if reply:
                writer.write(reply)
                await writer.drain()
            if opcode == _OP_CLOSE:
                return


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)
