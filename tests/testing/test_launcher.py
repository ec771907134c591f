"""The launchers and the scripted server themselves: a server restarted on an empty data
directory (its zxid starts over), an ensemble member serving read-only clients without a quorum,
and the scripted protocol server's handshake, replies and hang-ups."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from aiocoord.testing import ScriptedServer, ZooKeeperEnsemble, ZooKeeperServer, reply_frame
from aiocoord.testing.zookeeper import four_letter_word

PASSWD = bytes(16)


def connect_request(
    *, last_zxid: int = 0, timeout_ms: int = 4000, session_id: int = 0, read_only: bool = False
) -> bytes:
    """A length-prefixed ConnectRequest as a client sends it."""
    record = struct.pack(">iqiqi", 0, last_zxid, timeout_ms, session_id, len(PASSWD))
    record += PASSWD + bytes([read_only])
    return struct.pack(">i", len(record)) + record


def decode_connect_response(record: bytes) -> tuple[int, int, int, bytes, bool]:
    """(protocolVersion, timeOut, sessionId, passwd, readOnly) of a ConnectResponse record."""
    version, timeout_ms, session_id, size = struct.unpack_from(">iiqi", record)
    passwd = record[20 : 20 + size]
    return version, timeout_ms, session_id, passwd, record[20 + size :] == b"\x01"


def zxid(hosts: str) -> int:
    """The server's last zxid from ``srvr``."""
    host, _, port = hosts.rpartition(":")
    for line in four_letter_word(host, int(port), "srvr").splitlines():
        if line.startswith("Zxid:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise AssertionError(f"no Zxid in srvr of {hosts}")


def kazoo(hosts: str, *, read_only: bool = False) -> KazooClient:
    client = KazooClient(hosts=hosts, timeout=10, read_only=read_only)
    client.start(timeout=10)
    return client


def stop(client: KazooClient) -> None:
    client.stop()
    client.close()


# --- restart on an empty data directory


@pytest.fixture
def server() -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer() as zk:
        yield zk


def test_restart_keeps_data_and_restart_with_wipe_starts_over(server: ZooKeeperServer) -> None:
    client = kazoo(server.hosts)
    try:
        for i in range(20):
            client.create(f"/wipe-{i}", b"x")
    finally:
        stop(client)
    high = zxid(server.hosts)
    assert high >= 20

    server.restart()
    assert zxid(server.hosts) >= high
    client = kazoo(server.hosts)
    try:
        assert client.exists("/wipe-19") is not None
    finally:
        stop(client)

    server.restart(wipe=True)
    assert zxid(server.hosts) < 5  # 0 until the first session is created
    client = kazoo(server.hosts)
    try:
        assert client.exists("/wipe-0") is None
        assert client.exists("/wipe-19") is None
        assert client.get_children("/") == ["zookeeper"]
    finally:
        stop(client)
    assert zxid(server.hosts) < high


def test_wipe_data_refuses_a_running_process(server: ZooKeeperServer) -> None:
    with pytest.raises(RuntimeError, match="stopped process"):
        server._proc.wipe_data()


# --- read-only mode


def raw_connect(address: str, *, read_only: bool, timeout: float = 5.0) -> bytes:
    """Send a ConnectRequest and return the reply's record (b"" if the server hangs up)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(connect_request(read_only=read_only))
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
                break
    return data[4:]


def test_a_member_without_quorum_serves_read_only_clients() -> None:
    with ZooKeeperEnsemble(3, read_only_mode=True) as ensemble:
        assert [m.isro() for m in ensemble.members] == ["rw", "rw", "rw"]
        client = kazoo(ensemble.hosts)
        try:
            client.create("/ro-data", b"before")
        finally:
            stop(client)
        survivor = ensemble.leader()  # a leader without followers loses its quorum, too
        assert survivor is not None
        others = [i for i in range(3) if i != survivor]
        for i in others:
            ensemble.members[i].kill()
        started = time.monotonic()
        ensemble.wait_read_only(survivor, timeout=30)
        became_ro = time.monotonic() - started
        address = ensemble.member_hosts(survivor)

        record = raw_connect(address, read_only=True)
        version, timeout_ms, session_id, passwd, read_only = decode_connect_response(record)
        assert (version, read_only, len(passwd)) == (0, True, 16)
        assert timeout_ms > 0 and session_id != 0
        assert raw_connect(address, read_only=False) == b""  # a read-write client is refused

        client = kazoo(address, read_only=True)
        try:
            assert client.get("/ro-data")[0] == b"before"
        finally:
            stop(client)

        started = time.monotonic()
        ensemble.members[others[0]].restart(wipe=True)  # rebuilt from the quorum's data
        ensemble.members[others[1]].start()
        ensemble.wait_serving(timeout=60)
        ensemble.members[survivor].wait_isro("rw", timeout=30)
        back_rw = time.monotonic() - started
        assert [m.isro() for m in ensemble.members] == ["rw", "rw", "rw"]
        client = kazoo(ensemble.member_hosts(others[0]))
        try:
            client.sync("/ro-data")
            assert client.get("/ro-data")[0] == b"before"
        finally:
            stop(client)
        print(f"read-only after {became_ro:.1f}s, read-write again after {back_rw:.1f}s")


def test_an_ensemble_restarted_with_wipe_has_no_data() -> None:
    with ZooKeeperEnsemble(3) as ensemble:
        client = kazoo(ensemble.hosts)
        try:
            client.create("/gone", b"x")
        finally:
            stop(client)
        before = max(zxid(m.address) for m in ensemble.members)
        ensemble.restart(wipe=True)
        for m in ensemble.members:
            assert (m.data_dir / "myid").read_text().strip() == str(m.myid)
        after = max(zxid(m.address) for m in ensemble.members)
        assert after < before  # the epoch starts over, too: 0x100000000 after 0x100000003
        client = kazoo(ensemble.hosts)
        try:
            assert client.exists("/gone") is None
        finally:
            stop(client)


# --- the scripted server


async def handshake(
    address: str, hello: bytes | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Connect, send ``hello`` (a default ConnectRequest) and return the ConnectResponse record."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(hello or connect_request())
    size = int.from_bytes(await reader.readexactly(4), "big")
    return reader, writer, await reader.readexactly(size)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(size)


def request(xid: int, opcode: int, body: bytes = b"") -> bytes:
    return struct.pack(">iii", 8 + len(body), xid, opcode) + body


@pytest.mark.both_loops
async def test_scripted_server_handshake_script_replies_ping_and_close() -> None:
    seen: list[tuple[int, int, bytes]] = []

    async def script(xid: int, opcode: int, body: bytes) -> bytes | None:
        seen.append((xid, opcode, body))
        if opcode == 4:  # getData: a reply cut inside its Stat
            return reply_frame(xid, 0x99, 0, struct.pack(">i", 2) + b"hi" + b"\0" * 10)
        return None

    async with asyncio.timeout(10), ScriptedServer(script) as srv:
        reader, writer, record = await handshake(
            srv.address, connect_request(last_zxid=0x500, timeout_ms=6000)
        )
        assert decode_connect_response(record) == (0, 6000, 0x1234, bytes(range(16)), False)
        (hello,) = srv.connect_requests
        assert (hello.last_zxid_seen, hello.timeout_ms, hello.read_only) == (0x500, 6000, False)

        writer.write(request(1, 4, b"\0\0\0\x02/a\0"))
        reply = await read_frame(reader)
        assert struct.unpack_from(">iqi", reply) == (1, 0x99, 0)
        assert reply[16:] == struct.pack(">i", 2) + b"hi" + b"\0" * 10

        writer.write(request(-2, 11))
        assert await read_frame(reader) == struct.pack(">iqi", -2, 0, 0)

        writer.write(request(2, -11))
        assert await read_frame(reader) == struct.pack(">iqi", 2, 0, 0)
        assert await reader.read() == b""  # the server hangs up after closeSession
        writer.close()
        assert [(x, op) for x, op, _ in seen] == [(1, 4), (-2, 11), (2, -11)]
        assert srv.connections == 1


@pytest.mark.both_loops
async def test_scripted_server_can_ignore_pings_and_counts_connections() -> None:
    async with asyncio.timeout(10), ScriptedServer(lambda xid, op, body: b"") as srv:
        for _ in range(3):
            reader, writer, _ = await handshake(srv.address)
            writer.write(request(-2, 11))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await reader.read(1)
            writer.close()
        assert srv.connections == 3


@pytest.mark.both_loops
async def test_scripted_server_hangs_up_after_or_inside_the_handshake() -> None:
    async with asyncio.timeout(10):
        async with ScriptedServer(close_after_handshake=True) as srv:
            reader, writer, record = await handshake(srv.address, connect_request(read_only=True))
            assert decode_connect_response(record)[2] == 0x1234
            assert await reader.read() == b""
            writer.close()
            assert srv.connect_requests[0].read_only is True

        async with ScriptedServer(die_inside_handshake=True) as srv:
            host, _, port = srv.address.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(connect_request())
            data = await reader.read()  # everything until the hang-up
            writer.close()
            size = int.from_bytes(data[:4], "big")
            assert 0 < len(data) < 4 + size


@pytest.mark.both_loops
async def test_scripted_server_raises_what_the_script_raised() -> None:
    def script(xid: int, opcode: int, body: bytes) -> bytes | None:
        raise ValueError("script bug")

    with pytest.raises(ValueError, match="script bug"):
        async with asyncio.timeout(10), ScriptedServer(script) as srv:
            reader, writer, _ = await handshake(srv.address)
            writer.write(request(1, 3))
            assert await reader.read() == b""  # the connection is closed
            writer.close()
