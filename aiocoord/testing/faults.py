"""Real faults for tests: a TCP proxy that cuts or stalls connections, and server-side session
expiry (a second connection with the session's id and password closes the session)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from types import TracebackType
from typing import Any, Self

from ..transport import jute
from ..transport.client import Client
from ..transport.jute import OP

__all__ = ["TcpProxy", "expire_session", "expire_session_id"]

log = logging.getLogger("aiocoord.testing")


class TcpProxy:
    """A loopback TCP proxy in front of one server, run on its own thread and event loop, so it
    keeps working whatever the code under test does to its own loop.

    ``cut()`` resets every open connection (new ones are still accepted); ``stall()`` stops
    forwarding in both directions while keeping connections open (a silent peer);
    ``stall_replies()`` stops only the server-to-client direction (requests still reach the server,
    its replies are held back: with ``cut()`` after, a write applied whose reply was lost);
    ``pass_handshakes_only()`` lets each connection's handshake through and holds every request
    after it (a session that is live but whose requests never arrive);
    ``resume()`` forwards both ways again; ``refuse()`` makes new connections fail until
    ``accept()``. ``held_requests`` and ``held_replies`` count the bytes read from one side and
    held back from the other.
    """

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listen_port = listen_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")
        self._server: asyncio.Server | None = None
        self._requests_flowing = asyncio.Event()  # client -> server
        self._handshakes_only = asyncio.Event()  # client -> server: first frames only
        self._released = asyncio.Event()  # the opposite of _handshakes_only
        self._replies_flowing = asyncio.Event()  # server -> client
        self.held_requests = 0
        self.held_replies = 0
        self._refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._closing = False

    @classmethod
    def to(cls, hosts: str) -> TcpProxy:
        host, _, port = hosts.split(",")[0].rpartition(":")
        return cls(host, int(port))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()

        async def serve() -> int:
            self._requests_flowing.set()
            self._replies_flowing.set()
            self._released.set()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._listen_port)
            port: int = self._server.sockets[0].getsockname()[1]
            return port

        self.port = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=10)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            _reset(writer)
            return
        self._writers.add(writer)  # closed by cut() and close() even while connecting upstream
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)  # close() waits for it: never cancelled mid-connect (leak)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            self._writers.discard(writer)
            return
        finally:
            self._handlers.discard(handler)
        if writer.transport.is_closing() or self._closing:  # cut or closed meanwhile
            _reset(writer)
            _reset(up_writer)
            return
        self._writers.update((writer, up_writer))
        for src, dst, replies in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.ensure_future(self._pump(src, dst, (writer, up_writer), replies))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        replies: bool,
    ) -> None:
        flowing = self._replies_flowing if replies else self._requests_flowing
        # of a request stream: its first frame (the handshake) until it is whole
        handshake: bytearray | None = None if replies else bytearray()
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                head = b""
                if handshake is not None:
                    head, data = _take_frame(handshake, data)
                    if len(handshake) >= 4 and len(handshake) == 4 + _length(handshake):
                        handshake = None
                for part, beyond in ((head, False), (data, not replies)):
                    if not part:
                        continue
                    if not flowing.is_set() or (beyond and self._handshakes_only.is_set()):
                        self._hold(replies, len(part))
                        try:
                            while not flowing.is_set() or (
                                beyond and self._handshakes_only.is_set()
                            ):
                                await (flowing if not flowing.is_set() else self._released).wait()
                        finally:
                            self._hold(replies, -len(part))
                        if dst.transport.is_closing():
                            return  # cut while held: what was held back is dropped
                    dst.write(part)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in pair:
                _reset(w)
                self._writers.discard(w)

    def cut(self) -> None:
        """Reset every open connection through the proxy (both sides see RST/EOF)."""

        def do() -> None:
            for w in list(self._writers):
                _reset(w)
            self._writers.clear()

        self._loop.call_soon_threadsafe(do)
        self._sync()

    def _hold(self, replies: bool, size: int) -> None:
        if replies:
            self.held_replies += size
        else:
            self.held_requests += size

    def stall(self) -> None:
        """Stop forwarding: connections stay open, nothing gets through either way."""
        self._loop.call_soon_threadsafe(self._requests_flowing.clear)
        self._loop.call_soon_threadsafe(self._replies_flowing.clear)
        self._sync()

    def stall_replies(self) -> None:
        """Stop forwarding from the server to the client only: requests still reach the server
        (and are applied), their replies are held back. ``cut()`` then loses them: the client
        sees ConnectionLoss for writes that were applied."""
        self._loop.call_soon_threadsafe(self._replies_flowing.clear)
        self._sync()

    def pass_handshakes_only(self) -> None:
        """From the client to the server, forward only the first frame of each connection (the
        session handshake), open or new, and hold every request after it: the client connects
        and its session is live, but no request reaches the server (so none is applied) until
        ``resume()``."""

        def do() -> None:
            self._released.clear()
            self._handshakes_only.set()

        self._loop.call_soon_threadsafe(do)
        self._sync()

    def resume(self) -> None:
        """Forward everything both ways again (after ``stall()``, ``stall_replies()`` or
        ``pass_handshakes_only()``)."""
        self._loop.call_soon_threadsafe(self._handshakes_only.clear)
        self._loop.call_soon_threadsafe(self._released.set)
        self._loop.call_soon_threadsafe(self._requests_flowing.set)
        self._loop.call_soon_threadsafe(self._replies_flowing.set)
        self._sync()

    def refuse(self) -> None:
        """New connections are reset at once (open ones are left alone)."""
        self._refusing = True

    def accept(self) -> None:
        self._refusing = False

    def _sync(self) -> None:
        async def nop() -> None:
            return None

        asyncio.run_coroutine_threadsafe(nop(), self._loop).result(timeout=10)

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            self._closing = True
            if self._server is not None:
                # Stop accepting, then let the connections already accepted become transports
                # before the server closes: one made after Server.close() is left half-made
                # (Python 3.11's Server._attach asserts) and its socket leaks.
                loop = asyncio.get_running_loop()
                for sock in self._server.sockets:
                    loop.remove_reader(sock.fileno())
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                self._server.close()
            if self._handlers:  # connecting upstream: let them finish, then close what they made
                await asyncio.wait(list(self._handlers), timeout=5)
            for w in list(self._writers):
                _reset(w)
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # any transport of this loop still open (one accepted but not yet handed to
            # _handle, say): aborted too, so no socket outlives the loop
            await _abort_transports()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            # on a thread of its own: close() may be called from a thread running a loop
            sweeper = threading.Thread(target=self._sweep, daemon=True, name="proxy-sweep")
            sweeper.start()
            sweeper.join(timeout=10)
        self._loop.close()

    def _sweep(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(_last_sweep())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _last_sweep() -> None:
    """Run on a proxy's loop once it stopped serving: what was still on its way (a connection
    accepted while the proxy closed, its transport made after the shutdown's sweep) is
    cancelled and aborted, so no socket outlives the loop."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await _abort_transports()


async def _abort_transports() -> None:
    """Abort every transport of the running loop still open, closing ones too (one waiting to
    flush to a silent peer never would), and let them close their sockets."""
    for transport in list(getattr(asyncio.get_running_loop(), "_transports", {}).values()):
        transport.abort()
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def _length(frame: bytearray) -> int:
    return int.from_bytes(frame[:4], "big", signed=True)


def _take_frame(frame: bytearray, data: bytes) -> tuple[bytes, bytes]:
    """Add to ``frame`` (a frame's first bytes) what of ``data`` belongs to it; returns that part
    and the rest of ``data``."""
    taken = 0
    if len(frame) < 4:
        taken = min(4 - len(frame), len(data))
        frame += data[:taken]
    if len(frame) >= 4:
        more = min(4 + _length(frame) - len(frame), len(data) - taken)
        frame += data[taken : taken + more]
        taken += more
    return data[:taken], data[taken:]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection, also one already closing: a transport closed (by an EOF, say)
    with bytes still buffered for a peer that reads nothing waits for them forever and would
    outlive the proxy's loop with its socket open."""
    writer.transport.abort()


#: how long expire_session() keeps trying before it gives up with TimeoutError
EXPIRE_DEADLINE = 15.0


async def expire_session(client: Client, *, host: str | None = None) -> None:
    """Expire ``client``'s session on the server, as a network partition past the timeout would.

    A second connection presents the session's id and password and closes the session; connect
    and close go out in one write, before the client (whose connection the server drops when the
    session moves) can win the session back. Repeated until the server answers "expired".
    """
    session_id, passwd = client.session_id, client.session_password
    if not session_id:
        raise RuntimeError("the client has no session to expire")
    target = host or client.connected_host or client.hosts[0]
    await expire_session_id(
        session_id,
        passwd,
        target,
        last_zxid=client.last_zxid,
        timeout_ms=int(client.negotiated_timeout * 1000),
    )


async def expire_session_id(
    session_id: int, passwd: bytes, host: str, *, last_zxid: int = 0, timeout_ms: int = 10000
) -> None:
    """``expire_session`` for a session known only by its id and password (one of another
    process), through the server at ``host`` (``"127.0.0.1:port"``, any member of its ensemble).
    """
    address, _, port = host.rpartition(":")
    hello = jute.encode_connect(last_zxid, timeout_ms, session_id, passwd, False)
    close = jute.REQUEST_HEAD.pack(8, 1, OP.CLOSE)
    async with asyncio.timeout(EXPIRE_DEADLINE):
        while True:
            reader, writer = await asyncio.open_connection(address, int(port))
            try:
                writer.write(hello + close)
                size = int.from_bytes(await reader.readexactly(4), "big")
                granted, _, _, _ = jute.decode_connected(await reader.readexactly(size))
                if granted <= 0:
                    log.info("session 0x%x expired on %s", session_id, host)
                    return
                # the close is on its way; read its reply (or the server's hang-up) and check
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    size = int.from_bytes(await reader.readexactly(4), "big")
                    await reader.readexactly(size)
            except (OSError, asyncio.IncompleteReadError):
                pass  # the client took the session back first: try again
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await asyncio.sleep(0.05)
