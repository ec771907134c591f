"""One TCP connection to one ZooKeeper server: length-prefixed frames in, coalesced writes out.

The connection knows frames and its own requests in flight, not sessions. The first frame is the
handshake's (``handshake``, a future), and ``exchange`` sends a request and waits for its reply
before activation (the SASL steps); after ``activate`` each reply is matched to its request by
xid here (the server answers in order) and handed to the owner with it, and every other frame
(notifications, pings, auth) goes to the owner as it is. The in-flight table is the connection's
alone: when the connection dies, it hands every request still in flight to the owner, once.

Writes issued in one turn of the event loop go out as one ``transport.write`` (one syscall),
scheduled with a single ``call_soon``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any, Protocol, cast

from .errors import ProtocolError
from .jute import INT, REPLY_HEAD, REQUEST_HEAD
from .requests import Request

__all__ = ["MAX_FRAME", "Connection", "ConnectionOwner"]

#: The largest frame accepted from a server (jute.maxbuffer defaults to 1 MiB; allow headroom
#: for replies such as getChildren of a large node).
MAX_FRAME = 64 * 1024 * 1024
_XID_LIMIT = 0x7FFFFFFF
_REPLY_HEAD_SIZE = REPLY_HEAD.size
_UNPACK_HEAD = REPLY_HEAD.unpack_from
_UNPACK_INT = INT.unpack_from


class ConnectionOwner(Protocol):
    def reply_received(
        self, conn: Connection, req: Request[Any], frame: bytes, zxid: int, err: int
    ) -> None: ...

    def frame_received(self, conn: Connection, xid: int, frame: bytes) -> None: ...

    def connection_lost(
        self, conn: Connection, reason: str, in_flight: list[Request[Any]]
    ) -> None: ...


class Connection(asyncio.Protocol):
    __slots__ = (
        "_early",
        "_flush_scheduled",
        "_in",
        "_out",
        "_pending",
        "_xid",
        "active",
        "dead",
        "gone",
        "handshake",
        "host",
        "last_recv",
        "last_send",
        "loop",
        "owner",
        "released",
        "transport",
    )

    def __init__(self, owner: ConnectionOwner, host: str, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.host = host
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[bytes] = loop.create_future()
        self._pending: dict[int, Request[Any]] = {}
        self._xid = 0
        self.active = False  # frames go to the owner only once it has taken the session
        self.dead = False
        #: set once the connection is dead, for whoever waits on it
        self.gone = asyncio.Event()
        #: set once the transport has closed (the loop's connection_lost): its socket is released
        self.released = asyncio.Event()
        self._early: list[bytes] = []
        self._in = bytearray()
        self._out = bytearray()
        self._flush_scheduled = False
        self.last_recv = self.last_send = loop.time()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has its interface
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not a TCP socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.last_recv = self.loop.time()
        buf = self._in
        buf += data
        pos = 0
        end_of_data = len(buf)
        while end_of_data - pos >= 4 and not self.dead:
            (size,) = _UNPACK_INT(buf, pos)
            if size < 0 or size > MAX_FRAME:
                self.fail(f"bad frame length {size} from {self.host}")
                return
            end = pos + 4 + size
            if end > end_of_data:
                break
            frame = bytes(buf[pos + 4 : end])
            pos = end
            if self.active:
                self._deliver(frame)
            elif not self.handshake.done():
                self.handshake.set_result(frame)
            else:
                self._early.append(frame)
        if pos:
            del buf[:pos]

    def _deliver(self, frame: bytes) -> None:
        if len(frame) < _REPLY_HEAD_SIZE:
            self.fail(f"short frame of {len(frame)} bytes from {self.host}")
            return
        xid, zxid, err = _UNPACK_HEAD(frame, 0)
        if xid > 0:
            req = self._pending.pop(xid, None)
            if req is None:
                # its deadline ran out before the reply came; the zxid still counts
                self.owner.frame_received(self, xid, frame)
                return
            self.owner.reply_received(self, req, frame, zxid, err)
        else:
            self.owner.frame_received(self, xid, frame)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.released.set()
        reason = f"connection reset: {exc}" if exc else "server closed the connection (EOF)"
        self._die(reason)

    # -- used by the session ---------------------------------------------------------------
    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The TLS handshake over the connected socket; raises when it fails. The plain transport
        stays ours until it succeeds, so that ``fail`` closes it however the handshake ends
        (cancelled included: uvloop's ``create_connection(ssl=)`` leaks the socket then)."""
        plain = self.transport
        assert plain is not None, "start_tls() after the TCP connection is made"
        tls = await self.loop.start_tls(plain, self, context, server_hostname=server_hostname)
        if tls is None:  # pragma: no cover - only when the loop cannot do TLS at all
            raise ProtocolError(f"{self.host}: the event loop cannot start TLS")
        self.transport = tls

    def activate(self) -> None:
        """Start handing frames to the owner (after it has read the handshake)."""
        self.active = True
        early, self._early = self._early, []
        for frame in early:
            if self.dead:
                break
            self._deliver(frame)

    def exchange(self, opcode: int, body: bytes | bytearray) -> tuple[int, asyncio.Future[bytes]]:
        """Before ``activate``: send one request and get (its xid, the next frame: its reply)."""
        assert not self.active, "exchange() is for requests made before the session takes over"
        self._xid = xid = self._xid + 1
        self.handshake = reply = self.loop.create_future()
        if self.dead:
            reply.set_exception(ProtocolError(f"{self.host}: the connection is closed"))
            reply.exception()
        elif self._early:
            reply.set_result(self._early.pop(0))
        self.write_request(xid, opcode, body)
        return xid, reply

    def send(self, req: Request[Any]) -> None:
        """Send ``req`` under a new xid; its reply will be matched to it."""
        xid = self._xid + 1
        if xid >= _XID_LIMIT:
            xid = 1
        self._xid = req.xid = xid
        self._pending[xid] = req
        self.write_request(xid, req.opcode, req.body)

    def expire(self, now: float) -> list[Request[Any]]:
        """The requests in flight whose deadline has passed, taken out; a watching read is left
        in flight (its reply settles the watch the server set), and returned until its caller
        has been told."""
        pending = self._pending
        out = []
        for xid in list(pending):
            req = pending[xid]
            if req.deadline > now:
                break  # replies come in order; so do deadlines, nearly
            if req.watch is None:
                del pending[xid]
            elif req.future is not None and req.future.done():
                continue
            out.append(req)
        return out

    def write_request(self, xid: int, opcode: int, body: bytes | bytearray) -> None:
        out = self._out
        out += REQUEST_HEAD.pack(len(body) + 8, xid, opcode)
        out += body
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def write_raw(self, frame: bytes) -> None:
        self._out += frame
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.dead or self.transport is None or not self._out:
            return
        data, self._out = self._out, bytearray()
        self.last_send = self.loop.time()
        self.transport.write(data)

    def fail(self, reason: str) -> None:
        """Drop the connection now (read timeout, protocol error): the owner hears at once."""
        if self.transport is not None:
            self.transport.abort()
        self._die(reason)

    def close(self) -> None:
        """Flush what is queued and close gracefully."""
        self._flush()
        if self.transport is not None:
            self.transport.close()
        self._die("closed by the client")

    async def wait_released(self, grace: float) -> None:
        """After ``close``: wait until the transport has closed, at most ``grace`` seconds,
        then abort it. A TLS close waits for the peer's close_notify, which a loop closed
        meanwhile would leave pending, its socket open."""
        if self.transport is None or self.released.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.released.wait(), grace)
        if not self.released.is_set():
            self.transport.abort()

    def _die(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        self.gone.set()
        if not self.handshake.done():
            self.handshake.set_exception(ProtocolError(f"{self.host}: {reason}"))
            # retrieved or not, a failed handshake must not log "exception never retrieved"
            self.handshake.exception()
        in_flight = list(self._pending.values())
        self._pending.clear()
        self.owner.connection_lost(self, reason, in_flight)
