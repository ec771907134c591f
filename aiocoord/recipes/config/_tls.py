"""TLS over an asyncio stream pair, with the half-close that the legacy trigger format needs.

asyncio's own TLS transport cannot half-close: its ``write_eof()`` raises NotImplementedError,
and once a peer's close_notify arrives it shuts the connection down before a reply can be sent.
TLS 1.3 has a half-close (close_notify closes one direction only), and OpenSSL keeps the other
direction working, so this channel runs TLS on memory BIOs itself: a legacy client sends
``CMD|DATA`` and close_notify (``write_eof()``), and still reads the server's reply line.

``TlsChannel.open()`` does the handshake. ``pump()`` (run it in a task group while the channel is
used) decrypts what arrives into ``reader``, pausing while ``reader`` holds more than twice its
limit; ``read_to_end()`` does it without a task, for a client awaiting one reply. The channel is
its own writer (``write``, ``drain``, ``write_eof``, ``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

__all__ = ["TlsChannel"]

_CHUNK = 65536


class _Flow(asyncio.BaseTransport):
    """What the plaintext ``StreamReader`` sees as its transport: it pauses the pump when the
    reader's buffer is full and resumes it once the buffer has been read down."""

    def __init__(self) -> None:
        super().__init__()
        self.flowing = asyncio.Event()
        self.flowing.set()

    def pause_reading(self) -> None:
        self.flowing.clear()

    def resume_reading(self) -> None:
        self.flowing.set()


class TlsChannel:
    """One TLS connection over ``raw_reader``/``raw_writer`` (see the module docstring)."""

    def __init__(
        self,
        raw_reader: asyncio.StreamReader,
        raw_writer: asyncio.StreamWriter,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        limit: int,
    ) -> None:
        self._raw_reader, self._raw_writer = raw_reader, raw_writer
        self._tls, self._incoming, self._outgoing = tls, incoming, outgoing
        self._flow = _Flow()
        self.reader = asyncio.StreamReader(limit=limit)
        self.reader.set_transport(self._flow)

    @classmethod
    async def open(
        cls,
        raw_reader: asyncio.StreamReader,
        raw_writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        limit: int = _CHUNK,
    ) -> TlsChannel:
        """Handshake (``ssl.SSLError`` when it fails: the alert is sent to the peer first)."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname
        )
        channel = cls(raw_reader, raw_writer, tls, incoming, outgoing, limit)
        await channel._handshake()
        return channel

    async def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError:
                await self._flush_and_drain()  # the alert tells the peer why
                raise
            await self._flush_and_drain()
            if done:
                return
            data = await self._raw_reader.read(_CHUNK)
            if not data:
                raise ConnectionResetError("the peer closed the connection in the TLS handshake")
            self._incoming.write(data)

    async def pump(self) -> None:
        """Decrypt into ``reader`` until the peer's close_notify, its EOF or an error (which
        ``reader`` raises)."""
        try:
            while True:
                await self._flow.flowing.wait()
                if not await self.fill():
                    return
        except (ssl.SSLError, ConnectionError) as exc:
            self.reader.set_exception(exc)
        finally:
            if self.reader.exception() is None:
                self.reader.feed_eof()

    async def fill(self) -> bool:
        """Decrypt what arrives next into ``reader``; False at the peer's close_notify or EOF.
        (What came with the handshake's last flight is decrypted first.)"""
        if not self._decrypt():
            return False
        data = await self._raw_reader.read(_CHUNK)
        if not data:
            return False
        self._incoming.write(data)
        return self._decrypt()

    async def read_to_end(self) -> bytes:
        """Everything the peer sends until it closes (without ``pump``: a one-reply exchange)."""
        while await self.fill():
            pass
        self.reader.feed_eof()
        return await self.reader.read()

    def _decrypt(self) -> bool:
        """Feed ``reader`` what the received records hold; False at the peer's close_notify."""
        while True:
            try:
                plain = self._tls.read(_CHUNK)
            except ssl.SSLWantReadError:
                self._flush()  # (post-handshake messages: session tickets, key updates)
                return True
            except ssl.SSLZeroReturnError:
                return False
            if not plain:
                return False
            self.reader.feed_data(plain)

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._raw_writer.write(pending)

    async def _flush_and_drain(self) -> None:
        self._flush()
        await self._raw_writer.drain()

    # -- the writer's side ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._tls.write(data)
        self._flush()

    async def drain(self) -> None:
        await self._raw_writer.drain()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send close_notify: the peer reads an end of stream; this side can still read."""
        # (SSLWantReadError: the peer's close_notify has not come yet; reading goes on)
        with contextlib.suppress(ssl.SSLWantReadError):
            self._tls.unwrap()
        self._flush()

    def close(self) -> None:
        self._raw_writer.close()

    async def wait_closed(self) -> None:
        await self._raw_writer.wait_closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._tls
        if name == "peercert":
            return self._tls.getpeercert()
        return self._raw_writer.get_extra_info(name, default)
