"""The trigger protocol: an asyncio TCP server that turns commands into publishes, and its client.

Two framings on one port, told apart by the first byte of a connection:

- Legacy (the old trigger's line format): the client sends ``CMD|DATA`` and half-closes; the
  server splits on the first ``|`` only (DATA may hold ``|``; its bytes are kept exactly, a
  trailing newline included), answers one line ``OK <version>`` or ``ERR <code> <message>`` and
  closes. Not accepted when the server has a token (the line has no room for one).
- Framed (first byte ``{``): newline-delimited JSON requests
  ``{"id", "cmd", "data", "path"?, "key"?, "token"?}``, one JSON reply per request,
  ``{"id", "ok": true, "version"}`` or ``{"id", "ok": false, "code", "error"}``; many requests per
  connection.

Every bad input gets an error reply with a code and publishes nothing; the server keeps serving.
Codes: ``bad_request`` ``bad_json`` ``bad_encoding`` ``unknown_command`` ``empty_data``
``frame_too_large`` ``slow_client`` ``unauthorized`` ``busy`` ``too_large`` ``unavailable``
``internal``. A frame that is too large or too slow ends its connection (the stream cannot be
resynchronised). Empty data (none, or only whitespace; a framed request without ``data``
included) is ``empty_data`` unless the server allows it.

Idle and slow connections cannot starve the port: a connection must send its first byte within
``first_byte_timeout`` (5 s) and each request within ``frame_timeout`` (10 s); at
``max_connections`` (1024) a new connection evicts the oldest one that is not being served
(waiting for a request, or sending one), and is told ``busy`` only when every one is in a handler.

TLS: a server given an ``ssl.SSLContext`` speaks both framings over TLS only (a connection that
fails the handshake, plaintext included, is closed; the server keeps serving). TLS has no
half-close in asyncio's transport, so the channel is ``_tls.TlsChannel``: a legacy client ends its
request with close_notify and still reads the reply. A non-loopback address is refused unless the
clients are authenticated over TLS (a token, or a required client certificate), or the caller
says ``allow_insecure_listen``: a token sent in plaintext can be read by anyone on the path.

The server knows nothing of configs: it calls a handler per command (the config agent gives one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, Self

import anyio
import anyio.abc

from ...transport import codec
from ...transport.errors import CoordError, InvalidPath, PayloadTooLarge
from ._tls import TlsChannel

__all__ = [
    "TriggerClient",
    "TriggerError",
    "TriggerHandler",
    "TriggerRequest",
    "TriggerServer",
    "send_legacy",
]

log = logging.getLogger("aiocoord.trigger")

DEFAULT_PORT: Final = 8877
DEFAULT_MAX_FRAME: Final = 2 * 1024 * 1024


class TriggerError(CoordError):
    """A trigger request was refused; ``code`` says why (see the module docstring)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    """One command as the handler sees it. ``id`` is the framed request's id (None in legacy)."""

    cmd: str
    data: bytes
    path: str | None
    key: str | None
    id: Any
    peer: str


#: Handles one command; returns the version it made. Raise ``TriggerError`` to refuse.
TriggerHandler = Callable[[TriggerRequest], Awaitable[str]]


class _Writer(Protocol):
    """What a connection writes to: an ``asyncio.StreamWriter``, or a ``TlsChannel``."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TriggerServer:
    """Serves trigger commands to ``handlers`` (command name -> handler).

    ``token``: when set, every request must carry it (framed mode only). ``max_frame``: bytes
    per request. ``frame_timeout``: seconds a request may take to arrive once started.
    ``first_byte_timeout``: seconds a new connection may take to start its first request.
    ``idle_timeout``: seconds a framed connection may wait between requests.
    ``max_connections``: connections open at once; one more evicts the oldest that is not in a
    handler (``busy`` when all are). ``allow_empty``: accept empty (or whitespace) data.
    ``ssl_context``: serve over TLS only (a server-side context; ``verify_mode`` CERT_REQUIRED
    with a CA loaded requires client certificates). ``allow_insecure_listen``: serve a
    non-loopback address without TLS or without client authentication (see ``check_address``).
    """

    def __init__(
        self,
        handlers: Mapping[str, TriggerHandler],
        *,
        token: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        frame_timeout: float = 10.0,
        first_byte_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        max_connections: int = 1024,
        allow_empty: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        allow_insecure_listen: bool = False,
    ) -> None:
        if not handlers:
            raise ValueError("a trigger server needs at least one command")
        self._handlers = dict(handlers)
        self._token = token.encode() if token else None
        self.max_frame = max_frame
        self.frame_timeout = frame_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.allow_empty = allow_empty
        self.ssl_context = ssl_context
        self.allow_insecure_listen = allow_insecure_listen
        self._open: dict[_Open, None] = {}  # admitted connections, oldest first
        self._connections: set[asyncio.Task[Any]] = set()
        #: requests by outcome: "ok" or an error code (for metrics and tests)
        self.counts: Counter[str] = Counter()
        #: connections closed to make room for a newer one
        self.evicted = 0
        #: whether ``serve()`` has bound its address and accepts connections
        self.listening = False

    @staticmethod
    def check_address(
        host: str,
        has_token: bool,
        *,
        tls: bool = False,
        client_certs: bool = False,
        allow_insecure: bool = False,
    ) -> None:
        """ValueError unless ``host`` is loopback, or the clients are authenticated over TLS
        (``tls`` and a token or required ``client_certs``), or ``allow_insecure``."""
        if allow_insecure or _is_loopback(host):
            return
        if not tls:
            raise ValueError(
                f"refusing to serve triggers on non-loopback {host!r} without TLS: the token "
                "and the configs would cross the network in plaintext"
            )
        if not (has_token or client_certs):
            raise ValueError(
                f"refusing to serve triggers on non-loopback {host!r} without a token or "
                "client certificates: anyone who reaches the port could publish"
            )

    def _check_own_address(self, host: str) -> None:
        context = self.ssl_context
        self.check_address(
            host,
            self._token is not None,
            tls=context is not None,
            client_certs=context is not None and context.verify_mode == ssl.CERT_REQUIRED,
            allow_insecure=self.allow_insecure_listen,
        )

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) until cancelled; reports the bound port
        through ``task_status`` (``port = await tg.start(server.serve, host, 0)``)."""
        self._check_own_address(host)
        server = await asyncio.start_server(
            self._connection, host, port, limit=self.max_frame + 1, reuse_address=True
        )
        bound = server.sockets[0].getsockname()[1]
        log.info(
            "trigger server listening on %s:%d%s", host, bound, " (TLS)" if self.ssl_context else ""
        )
        try:
            async with server:
                self.listening = True
                task_status.started(bound)
                await anyio.sleep_forever()
        finally:
            self.listening = False
            # asyncio (3.11) leaves the connections' tasks running when the server closes
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)
            log.info("trigger server on %s:%d stopped", host, bound)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        conn = _Open(f"{host}:{port}")
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if self._admit(conn):
                try:
                    with conn.scope:
                        await self._serve_connection(reader, writer, conn)
                finally:
                    self._open.pop(conn, None)
            else:
                message = f"too many connections (limit {self.max_connections}), all being served"
                self._reject(conn.peer, "busy", message)
                writer.write(f"ERR busy {message}\n".encode())
            # (an evicted one is closed at once; a TLS one lingered in _serve_connection)
            if not conn.scope.cancel_called and self.ssl_context is None:
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    await _linger(reader, writer)
        except (ConnectionError, OSError, RuntimeError) as exc:  # (uvloop: "handler is closed")
            log.info("trigger connection from %s failed: %s", conn.peer, exc)
        except asyncio.CancelledError:
            # the server is shutting down; this task is the connection's root, so it ends here
            # (asyncio 3.11 logs a cancelled connection task as an error)
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(
                ConnectionError, OSError, RuntimeError, asyncio.CancelledError
            ):
                await writer.wait_closed()

    def _admit(self, conn: _Open) -> bool:
        """Take ``conn`` in, evicting the oldest connection not in a handler when full; False
        when every open connection is being served."""
        if len(self._open) >= self.max_connections:
            victim = next((c for c in self._open if not c.serving), None)
            if victim is None:
                return False
            del self._open[victim]
            victim.scope.cancel()
            self.evicted += 1
            log.info(
                "trigger connection from %s evicted: %d connections open (the limit), a newer "
                "one from %s takes its place",
                victim.peer, self.max_connections, conn.peer,
            )  # fmt: skip
        self._open[conn] = None
        return True

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Open
    ) -> None:
        if self.ssl_context is None:
            await self._serve_stream(reader, writer, conn)
            return
        # ssl.SSLError (an OSError: logged by _connection) when the handshake fails
        with anyio.move_on_after(self.first_byte_timeout) as waiting:
            channel = await TlsChannel.open(
                reader, writer, self.ssl_context, server_side=True, limit=self.max_frame + 1
            )
        if waiting.cancelled_caught:
            log.info(
                "trigger connection from %s did not finish the TLS handshake in %gs: closed",
                conn.peer, self.first_byte_timeout,
            )  # fmt: skip
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(channel.pump)
            await self._serve_stream(channel.reader, channel, conn)
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                await _linger(channel.reader, channel)
            tg.cancel_scope.cancel()

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: _Writer, conn: _Open
    ) -> None:
        with anyio.move_on_after(self.first_byte_timeout) as waiting:
            first = await reader.read(1)
        if waiting.cancelled_caught:
            log.info(
                "trigger connection from %s sent nothing in %gs: closed",
                conn.peer, self.first_byte_timeout,
            )  # fmt: skip
        elif first == b"{":
            await self._framed(reader, writer, first, conn)
        elif first:
            await self._legacy(reader, writer, first, conn)

    def _reject(self, peer: str, code: str, message: str) -> None:
        self.counts[code] += 1
        log.warning("trigger from %s refused: %s %s", peer, code, message)

    # -- legacy ----------------------------------------------------------------------------
    async def _legacy(
        self, reader: asyncio.StreamReader, writer: _Writer, first: bytes, conn: _Open
    ) -> None:
        peer = conn.peer
        frame = bytearray(first)
        try:
            with anyio.fail_after(self.frame_timeout):
                while len(frame) <= self.max_frame:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    frame += chunk
        except TimeoutError:
            writer.write(self._legacy_error(peer, "slow_client", self._slow_message()))
            return
        try:
            request = _parse_legacy(
                bytes(frame), peer, max_frame=self.max_frame, has_token=self._token is not None
            )
            with conn.handling():
                version = await self._dispatch(request)
        except TriggerError as exc:
            writer.write(self._legacy_error(peer, exc.code, exc.message))
            return
        writer.write(f"OK {version}\n".encode())

    def _legacy_error(self, peer: str, code: str, message: str) -> bytes:
        self._reject(peer, code, message)
        return f"ERR {code} {message}\n".encode()

    def _slow_message(self) -> str:
        return f"request not complete within {self.frame_timeout:g}s"

    # -- framed ----------------------------------------------------------------------------
    async def _framed(
        self, reader: asyncio.StreamReader, writer: _Writer, first: bytes, conn: _Open
    ) -> None:
        peer = conn.peer
        pending = first
        while True:
            if not pending:
                with anyio.move_on_after(self.idle_timeout) as waiting:
                    pending = await reader.read(1)
                if waiting.cancelled_caught:
                    log.info(
                        "trigger connection from %s idle for %gs: closed", peer, self.idle_timeout
                    )
                    return
                if not pending:
                    return  # the client is done
            line: bytes | None
            try:
                with anyio.fail_after(self.frame_timeout):
                    line = pending + await reader.readuntil(b"\n")
            except TimeoutError:
                self._reply(writer, peer, None, TriggerError("slow_client", self._slow_message()))
                return
            except asyncio.LimitOverrunError:  # no newline within the reader's limit
                line = None
            except asyncio.IncompleteReadError as exc:  # last request without a newline
                line = pending + exc.partial
            pending = b""
            if line is None or len(line.rstrip(b"\n")) > self.max_frame:
                message = f"request exceeds {self.max_frame} bytes"
                self._reply(writer, peer, None, TriggerError("frame_too_large", message))
                return
            if not line.strip():
                continue
            request_id: Any = None
            try:
                request = _parse_framed(line, peer, token=self._token)
                request_id = request.id
                with conn.handling():
                    version = await self._dispatch(request)
            except TriggerError as exc:
                if isinstance(exc, _WithId):
                    request_id = exc.request_id
                self._reply(writer, peer, request_id, exc)
            else:
                writer.write(
                    codec.dumps({"id": request_id, "ok": True, "version": version}) + b"\n"
                )
            await writer.drain()

    def _reply(self, writer: _Writer, peer: str, request_id: Any, error: TriggerError) -> None:
        self._reject(peer, error.code, error.message)
        reply = {"id": request_id, "ok": False, "code": error.code, "error": error.message}
        writer.write(codec.dumps(reply) + b"\n")

    async def _dispatch(self, request: TriggerRequest) -> str:
        handler = _check_request(request, self._handlers, allow_empty=self.allow_empty)
        try:
            version = await handler(request)
        except TriggerError as exc:
            raise _WithId(request.id, exc.code, exc.message) from exc
        except PayloadTooLarge as exc:
            raise _WithId(request.id, "too_large", str(exc)) from exc
        except InvalidPath as exc:
            raise _WithId(request.id, "bad_request", str(exc)) from exc
        except CoordError as exc:
            raise _WithId(request.id, "unavailable", f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            log.exception("trigger handler for %s failed", request.cmd)
            raise _WithId(request.id, "internal", f"{type(exc).__name__}: {exc}") from exc
        self.counts["ok"] += 1
        log.info("%s from %s: %s (%d bytes)", request.cmd, request.peer, version, len(request.data))
        return version


# -- parsing and checks (pure: no I/O) -------------------------------------------------------
def _parse_legacy(frame: bytes, peer: str, *, max_frame: int, has_token: bool) -> TriggerRequest:
    """A whole legacy ``CMD|DATA`` request as a request, or the ``TriggerError`` that refuses
    it: split on the first ``|`` only, the data's bytes kept exactly. ``has_token``: the server
    requires one, which the line has no room for."""
    if len(frame) > max_frame:
        raise TriggerError("frame_too_large", f"request exceeds {max_frame} bytes")
    if has_token:
        raise TriggerError("unauthorized", "this server requires a token: use the framed JSON mode")
    head, bar, data = frame.partition(b"|")
    if not bar:
        raise TriggerError("bad_request", "expected CMD|DATA (no '|' in the request)")
    try:
        cmd = head.decode("ascii")
    except UnicodeDecodeError:
        raise TriggerError("bad_encoding", "the command is not ASCII") from None
    return TriggerRequest(cmd, data, None, None, None, peer)


def _parse_framed(line: bytes, peer: str, *, token: bytes | None) -> TriggerRequest:
    """One framed JSON request line as a request, or the ``TriggerError`` that refuses it
    (``_WithId`` once its id is known). ``token``: the one every request must carry, if any."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TriggerError("bad_encoding", f"request is not UTF-8: {exc}") from None
    try:
        raw = codec.loads_object(text, what="request")
    except codec.DecodeError as exc:
        raise TriggerError("bad_json", str(exc)) from None
    request_id = raw.get("id")
    if not isinstance(request_id, str | int | None) or isinstance(request_id, bool):
        raise TriggerError("bad_request", "id must be a string, an integer or null")
    given = raw.get("token")
    if token is not None and not (
        isinstance(given, str) and hmac.compare_digest(given.encode(), token)
    ):
        raise _WithId(request_id, "unauthorized", "missing or wrong token")
    fields: dict[str, str | None] = {}
    for name, required in (("cmd", True), ("data", False), ("path", False), ("key", False)):
        value = raw.get(name)
        if value is None and not required:
            fields[name] = None
        elif not isinstance(value, str):
            kind = "missing" if value is None else f"a {type(value).__name__}"
            raise _WithId(request_id, "bad_request", f"{name!r} must be a string, not {kind}")
        else:
            fields[name] = value
    data = (fields["data"] or "").encode()
    return TriggerRequest(
        fields["cmd"] or "", data, fields["path"], fields["key"], request_id, peer
    )


def _check_request(
    request: TriggerRequest, handlers: Mapping[str, TriggerHandler], *, allow_empty: bool
) -> TriggerHandler:
    """The handler of ``request``'s command, or the ``_WithId`` that refuses the request: an
    unknown command, or empty data (none, or only whitespace) unless ``allow_empty``."""
    handler = handlers.get(request.cmd)
    if handler is None:
        known = ", ".join(sorted(handlers))
        raise _WithId(request.id, "unknown_command", f"{request.cmd!r} (known: {known})")
    if not allow_empty and not request.data.strip():
        message = f"{request.cmd} without data (empty or only whitespace): nothing to publish"
        raise _WithId(request.id, "empty_data", message)
    return handler


async def _linger(reader: asyncio.StreamReader, writer: _Writer) -> None:
    """Half-close and drain what the client still sends (briefly), so that closing does not
    reset the connection before the client has read the reply."""
    if writer.can_write_eof():
        writer.write_eof()
    with anyio.move_on_after(1.0):
        drained = 0
        while drained < 1 << 20 and (chunk := await reader.read(65536)):
            drained += len(chunk)


@dataclass(eq=False, slots=True)
class _Open:
    """An admitted connection: ``scope`` closes it when evicted; ``serving`` while one of its
    requests is in a handler (never evicted then: a publish is not cut in half)."""

    peer: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    serving: bool = False

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        self.serving = True
        try:
            yield
        finally:
            self.serving = False


class _WithId(TriggerError):
    def __init__(self, request_id: Any, code: str, message: str) -> None:
        super().__init__(code, message)
        self.request_id = request_id


class TriggerClient:
    """A framed-mode client: ``async with TriggerClient(host, port) as t: await t.send("ADD",
    data)``. Many requests per connection; errors raise ``TriggerError``. ``ssl_context``: a
    client-side context to speak TLS (the server's name checked against ``host``)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self._token = host, port, token
        self._ssl_context = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0

    async def __aenter__(self) -> Self:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=DEFAULT_MAX_FRAME, ssl=self._ssl_context
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def send(
        self, cmd: str, data: str | bytes, *, path: str | None = None, key: str | None = None
    ) -> str:
        """Send one command; returns the version it made."""
        if self._reader is None or self._writer is None:
            raise RuntimeError("TriggerClient is not open (use async with)")
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "cmd": cmd, "data": text}
        if path is not None:
            request["path"] = path
        if key is not None:
            request["key"] = key
        if self._token is not None:
            request["token"] = self._token
        self._writer.write(codec.dumps(request) + b"\n")
        await self._writer.drain()
        line = await self._reader.readline()
        if not line:
            raise ConnectionResetError("the trigger server closed the connection")
        if line.startswith(b"ERR "):
            raise _error_line(line.decode(errors="replace"))
        reply = codec.loads_object(line, what="trigger reply")
        if not reply.get("ok"):
            raise TriggerError(str(reply.get("code")), str(reply.get("error")))
        return str(reply["version"])


async def send_legacy(
    host: str, port: int, request: bytes, *, ssl_context: ssl.SSLContext | None = None
) -> str:
    """Send one legacy ``CMD|DATA`` request (half-closing after it: over TLS with close_notify);
    returns the version, or raises ``TriggerError``. ``ssl_context``: as ``TriggerClient``'s."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if ssl_context is None:
            _send_request(writer, request)
            await writer.drain()
            reply = await reader.readline()
        else:
            channel = await TlsChannel.open(
                reader, writer, ssl_context, server_side=False, server_hostname=host
            )
            _send_request(channel, request)
            await channel.drain()
            reply = (await channel.read_to_end()).split(b"\n", 1)[0]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    line = reply.decode(errors="replace").rstrip("\n")
    if line.startswith("OK "):
        return line[3:]
    raise _error_line(line)


def _send_request(writer: _Writer, request: bytes) -> None:
    writer.write(request)
    writer.write_eof()


def _error_line(line: str) -> TriggerError:
    """``ERR <code> <message>`` (or no reply at all) as a ``TriggerError``."""
    _, code, message = [*line.rstrip("\n").split(" ", 2), "", ""][:3]
    return TriggerError(code or "closed", message or "no reply")
