"""The trigger server over real TCP, publishing into a real ZooKeeper: the legacy line format, the
framed JSON mode, and every bad input (each publishes nothing; the server keeps serving)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from aiocoord import (
    Client,
    ConfigStore,
    TriggerClient,
    TriggerError,
    TriggerRequest,
    TriggerServer,
    send_legacy,
)
from aiocoord.transport import codec
from tests.helpers import eventually

PATH = "/Applications/NginxConf"


@asynccontextmanager
async def serving(zk: Client, **options: object) -> AsyncIterator[tuple[TriggerServer, int]]:
    store = ConfigStore(zk, PATH)

    async def add(request: TriggerRequest) -> str:
        return await store.publish(request.data, key=request.key)

    server = TriggerServer({"ADD": add}, **options)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        yield server, port
        tg.cancel_scope.cancel()


async def raw_exchange(port: int, payload: bytes, *, half_close: bool = True) -> bytes:
    """Send bytes as a plain TCP client would; return everything the server answers."""
    with anyio.fail_after(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(payload)
            await writer.drain()
            if half_close:
                writer.write_eof()
            return await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()


async def history(zk: Client) -> list[bytes]:
    return [v.data for v in await ConfigStore(zk, PATH).history()]


async def assert_still_serving(port: int, zk: Client) -> None:
    before = len(await history(zk))
    with anyio.fail_after(10):
        version = await send_legacy("127.0.0.1", port, b"ADD|still serving")
    assert version.startswith("conf-")
    assert len(await history(zk)) == before + 1


async def test_plain_tcp_client_adds_data_split_on_the_first_bar_only(zk: Client) -> None:
    async with serving(zk) as (_, port):
        reply = await raw_exchange(port, b"ADD|hello|world")
        assert reply == b"OK conf-0000000000\n"
        assert await history(zk) == [b"hello|world"]
        # data bytes are kept exactly, a trailing newline and non-UTF-8 bytes included
        assert (await raw_exchange(port, b"ADD|a\xffb\n")).startswith(b"OK ")
        assert (await history(zk))[-1] == b"a\xffb\n"


async def test_framed_mode_many_requests_one_connection_with_ids(zk: Client) -> None:
    async with serving(zk) as (_, port):
        reply = await raw_exchange(
            port,
            b'{"id": "a", "cmd": "ADD", "data": "one"}\n'
            b'{"id": 7, "cmd": "ADD", "data": "two", "key": "k"}\n'
            b'{"id": 8, "cmd": "ADD", "data": "two", "key": "k"}\n',
        )
        replies = [codec.loads(line) for line in reply.splitlines()]
        assert replies == [
            {"id": "a", "ok": True, "version": "conf-0000000000"},
            {"id": 7, "ok": True, "version": "conf-0000000001"},
            {"id": 8, "ok": True, "version": "conf-0000000001"},  # same key: one version
        ]
        async with TriggerClient("127.0.0.1", port) as client:
            assert await client.send("ADD", "three") == "conf-0000000002"
            assert await client.send("ADD", b"four") == "conf-0000000003"
        assert await history(zk) == [b"one", b"two", b"three", b"four"]


LEGACY_BAD = [
    (b"DEL|x", "unknown_command"),
    (b"ADD hello", "bad_request"),
    (b"\xff\xfe|x", "bad_encoding"),
]


@pytest.mark.parametrize(("payload", "code"), LEGACY_BAD)
async def test_bad_legacy_request_is_refused_and_publishes_nothing(
    zk: Client, payload: bytes, code: str
) -> None:
    async with serving(zk) as (server, port):
        reply = await raw_exchange(port, payload)
        assert reply.startswith(f"ERR {code} ".encode()), reply
        assert await history(zk) == []
        assert server.counts[code] == 1
        await assert_still_serving(port, zk)


FRAMED_BAD: list[tuple[bytes, str]] = [
    (b'{"id": 1, "cmd": "DEL", "data": "x"}\n', "unknown_command"),
    (b'{"id": 1, "cmd": "ADD", "data": "x"\n', "bad_json"),
    (b'{"id": 1, "cmd": "ADD", "data": "\xff"}\n', "bad_encoding"),
    (b'{"id": 1, "data": "x"}\n', "bad_request"),
    (b'{"id": 1, "cmd": "ADD", "data": 5}\n', "bad_request"),
    (b'{"id": [1], "cmd": "ADD", "data": "x"}\n', "bad_request"),
    (b'{"id": 1, "cmd": "ADD", "data": "x"} trailing\n', "bad_json"),
    (b"{}\n", "bad_request"),
]


@pytest.mark.parametrize(("payload", "code"), FRAMED_BAD)
async def test_bad_framed_request_gets_an_error_and_the_connection_goes_on(
    zk: Client, payload: bytes, code: str
) -> None:
    async with serving(zk) as (_, port):
        reply = await raw_exchange(port, payload + b'{"id": 2, "cmd": "ADD", "data": "good"}\n')
        first, second = (codec.loads(line) for line in reply.splitlines())
        assert first["ok"] is False and first["code"] == code, first
        assert first["error"]
        assert second == {"id": 2, "ok": True, "version": "conf-0000000000"}
        assert await history(zk) == [b"good"]


async def test_oversized_frames_are_refused_in_both_modes(zk: Client) -> None:
    async with serving(zk, max_frame=1000) as (server, port):
        legacy = await raw_exchange(port, b"ADD|" + b"x" * 2000)
        assert legacy.startswith(b"ERR frame_too_large ")
        framed = await raw_exchange(
            port, codec.dumps({"id": 1, "cmd": "ADD", "data": "x" * 2000}) + b"\n"
        )
        assert codec.loads(framed)["code"] == "frame_too_large"
        assert server.counts["frame_too_large"] == 2
        assert await history(zk) == []
        await assert_still_serving(port, zk)


async def test_payload_over_the_znode_limit_is_refused_before_it_is_sent(zk: Client) -> None:
    async with serving(zk, max_frame=4 * 1024 * 1024) as (_, port):
        reply = await raw_exchange(port, b"ADD|" + b"x" * (1024 * 1024 + 1))
        assert reply.startswith(b"ERR too_large ")
        assert await history(zk) == []
        await assert_still_serving(port, zk)


async def test_token_is_required_and_checked(zk: Client) -> None:
    async with serving(zk, token="s3cret") as (server, port):
        legacy = await raw_exchange(port, b"ADD|x")
        assert legacy.startswith(b"ERR unauthorized ")
        async with TriggerClient("127.0.0.1", port, token="wrong") as client:
            with pytest.raises(TriggerError) as bad:
                await client.send("ADD", "x")
            assert bad.value.code == "unauthorized"
        async with TriggerClient("127.0.0.1", port) as client:
            with pytest.raises(TriggerError, match="unauthorized"):
                await client.send("ADD", "x")
        assert await history(zk) == []
        async with TriggerClient("127.0.0.1", port, token="s3cret") as client:
            assert await client.send("ADD", "x") == "conf-0000000000"
        assert server.counts["unauthorized"] == 3


async def test_slow_client_is_cut_off_and_others_are_served(zk: Client) -> None:
    async with serving(zk, frame_timeout=0.5) as (server, port):
        with anyio.fail_after(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'{"id": 1, "cmd": "ADD", "da')  # and nothing more
            await writer.drain()
            await assert_still_serving(port, zk)  # served while the slow one dawdles
            reply = await reader.read()
            writer.close()
            await writer.wait_closed()
        assert codec.loads(reply)["code"] == "slow_client"
        assert server.counts["slow_client"] == 1
        assert len(await history(zk)) == 1


EMPTY: list[bytes] = [
    b"ADD|",  # legacy
    b"ADD|\n \t",  # legacy, only whitespace (what `echo 'ADD|' | nc` sends)
    b'{"id": 1, "cmd": "ADD", "data": ""}\n',
    b'{"id": 1, "cmd": "ADD"}\n',  # framed without data
]


@pytest.mark.parametrize("payload", EMPTY)
async def test_empty_data_is_refused_in_every_form(zk: Client, payload: bytes) -> None:
    async with serving(zk) as (server, port):
        reply = await raw_exchange(port, payload)
        if payload.startswith(b"{"):
            answer = codec.loads(reply)
            assert (answer["ok"], answer["code"], answer["id"]) == (False, "empty_data", 1)
        else:
            assert reply.startswith(b"ERR empty_data "), reply
        assert await history(zk) == []
        assert server.counts["empty_data"] == 1
        await assert_still_serving(port, zk)


async def test_empty_data_is_published_when_allowed(zk: Client) -> None:
    async with serving(zk, allow_empty=True) as (_, port):
        assert await raw_exchange(port, b"ADD|") == b"OK conf-0000000000\n"
        reply = await raw_exchange(port, b'{"id": 1, "cmd": "ADD"}\n')
        assert codec.loads(reply) == {"id": 1, "ok": True, "version": "conf-0000000001"}
        assert await history(zk) == [b"", b""]


async def test_a_connection_that_sends_nothing_is_closed_at_the_first_byte_deadline(
    zk: Client,
) -> None:
    async with serving(zk, first_byte_timeout=0.5, idle_timeout=600) as (_, port):
        with anyio.fail_after(20):  # far below the idle timeout
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.read() == b""  # closed by the server
            writer.close()
            await writer.wait_closed()


async def test_a_new_connection_evicts_the_oldest_one_not_being_served(zk: Client) -> None:
    async with serving(zk, max_connections=3, first_byte_timeout=600) as (server, port):
        with anyio.fail_after(20):
            held = []
            for n in range(3):
                held.append(await asyncio.open_connection("127.0.0.1", port))
                if n == 1:
                    held[-1][1].write(b'{"id": 1, "cmd"')  # mid-request: evictable too
            await eventually(lambda: len(server._open) == 3, 10)
            version = await send_legacy("127.0.0.1", port, b"ADD|through")
            assert version == "conf-0000000000"
            assert await held[0][0].read() == b""  # the oldest was closed for it
            assert server.evicted == 1
            held.append(await asyncio.open_connection("127.0.0.1", port))  # full again
            await eventually(lambda: len(server._open) == 3, 10)
            version = await send_legacy("127.0.0.1", port, b"ADD|again")
            assert await held[1][0].read() == b""  # the next oldest: cut in mid-request
            assert server.evicted == 2
            for _, writer in held:
                writer.close()
                await writer.wait_closed()
        assert await history(zk) == [b"through", b"again"]


async def test_busy_only_when_every_connection_is_in_a_handler(zk: Client) -> None:
    store = ConfigStore(zk, PATH)
    release = anyio.Event()

    async def slow_add(request: TriggerRequest) -> str:
        await release.wait()
        return await store.publish(request.data)

    server = TriggerServer({"ADD": slow_add}, max_connections=1)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        with anyio.fail_after(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ADD|first")
            writer.write_eof()
            await eventually(lambda: any(c.serving for c in server._open), 10)
            reply = await raw_exchange(port, b"ADD|second")
            assert reply.startswith(b"ERR busy "), reply  # the one in its handler is not cut
            release.set()
            assert await reader.read() == b"OK conf-0000000000\n"
            writer.close()
            await writer.wait_closed()
        assert server.counts["busy"] == 1
        assert await history(zk) == [b"first"]
        tg.cancel_scope.cancel()


def ensure_file_descriptors(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (up to the hard limit), or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_hundreds_of_idle_and_slow_connections_never_stop_a_trigger(zk: Client) -> None:
    """500 connections that send nothing and one that sends a byte a second, against the
    server's defaults: a real trigger is served at once, not after the 60 s idle timeout."""
    ensure_file_descriptors(2 * 500 + 512)  # both ends of each connection live in this process
    async with serving(zk) as (_, port):
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            with anyio.fail_after(60):
                for _ in range(500):
                    idle.append(await asyncio.open_connection("127.0.0.1", port))
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
            idle.append((slow_reader, slow_writer))

            async def drip() -> None:
                for byte in b"ADD|slowly sent":
                    slow_writer.write(bytes([byte]))
                    await anyio.sleep(1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(drip)
                with anyio.fail_after(10):  # generous, yet far below the 60 s idle timeout
                    version = await send_legacy("127.0.0.1", port, b"ADD|legitimate")
                assert (await ConfigStore(zk, PATH).get(version)).data == b"legitimate"
                with anyio.fail_after(30):  # the slow one is cut at the request deadline
                    reply = await slow_reader.read()
                tg.cancel_scope.cancel()
            assert reply.startswith(b"ERR slow_client "), reply
            assert await history(zk) == [b"legitimate"]
        finally:
            for _, writer in idle:
                writer.close()
            with anyio.move_on_after(10):
                for _, writer in idle:
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()


async def test_handler_failure_is_reported_as_unavailable(zk: Client) -> None:
    async def broken(request: TriggerRequest) -> str:
        await zk.get("/does/not/exist")
        return "never"

    server = TriggerServer({"ADD": broken})
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        reply = await raw_exchange(port, b"ADD|x")
        assert reply.startswith(b"ERR unavailable NoNode")
        tg.cancel_scope.cancel()


async def test_non_loopback_address_without_tls_is_refused() -> None:
    add: Callable[[TriggerRequest], object] = lambda request: None  # noqa: E731
    server = TriggerServer({"ADD": add})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="without TLS"):
        await server.serve("0.0.0.0", 0)
