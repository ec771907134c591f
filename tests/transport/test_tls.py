"""TLS to ZooKeeper's secure client port, against a real server that requires a client
certificate (``ssl.clientAuth=need``): operations, a server certificate from another CA, the name
check, a missing client certificate, a handshake that never completes, and core session behaviour
(watches, expiry, multi) over TLS as over a plain connection."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from aiocoord import (
    Client,
    ConnectError,
    EventType,
    KeeperState,
    NoNode,
    Op,
    SessionState,
    WatchEvent,
    tls_context,
)
from aiocoord.testing import TlsCertificates, ZooKeeperServer, expire_session
from aiocoord.testing.pytest_plugin import TEST_SESSION_TIMEOUT


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsCertificates:
    return TlsCertificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(certs: TlsCertificates) -> Iterator[ZooKeeperServer]:
    """A plain port (the probes, the plain runs) and a TLS port that requires a client cert."""
    with ZooKeeperServer(tls=certs.server_tls("need")) as server:
        yield server


@pytest.mark.both_loops
async def test_operations_over_mutual_tls(
    tls_server: ZooKeeperServer, certs: TlsCertificates, namespace: str
) -> None:
    async with Client(
        tls_server.tls_hosts, namespace=namespace, ssl=certs.client_context(), session_timeout=4
    ) as zk:
        assert zk.connected_host == tls_server.tls_hosts
        await zk.create("/a", b"1")
        await zk.set("/a", b"2")
        assert (await zk.get("/a"))[0] == b"2"
        assert await zk.children("/") == ["a"]
        assert any(scheme == "x509" for scheme, _ in await zk.whoami())


@pytest.mark.both_loops
async def test_server_certificate_from_another_ca_is_refused(
    tls_server: ZooKeeperServer, tmp_path: Path
) -> None:
    stranger = TlsCertificates(tmp_path / "other")  # a CA that never signed the server's cert
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        async with Client(tls_server.tls_hosts, ssl=stranger.client_context(), connect_timeout=1.5):
            pass
    assert time.monotonic() - started < 5
    text = str(info.value)
    assert "TLS handshake failed" in text and "certificate" in text, text


async def test_server_name_is_checked(tls_server: ZooKeeperServer, certs: TlsCertificates) -> None:
    """The certificate names localhost and 127.0.0.1: reached as 127.0.0.2 (the same loopback
    server), it is refused unless the name check is turned off."""
    other_name = f"127.0.0.2:{tls_server.tls_port}"
    with pytest.raises(ConnectError) as info:
        async with Client(other_name, ssl=certs.client_context(), connect_timeout=1.5):
            pass
    assert "TLS handshake failed" in str(info.value)
    assert "127.0.0.2" in str(info.value)
    unchecked = certs.client_context(verify_hostname=False)
    async with Client(other_name, ssl=unchecked, connect_timeout=5) as zk:
        await zk.exists("/")


async def test_client_certificate_required(
    tls_server: ZooKeeperServer, certs: TlsCertificates
) -> None:
    """ssl.clientAuth=need: refused without a client certificate (and served with one, above)."""
    with pytest.raises(ConnectError) as info:
        async with Client(
            tls_server.tls_hosts, ssl=certs.client_context(client_cert=False), connect_timeout=1.5
        ):
            pass
    assert "TLS handshake failed" in str(info.value)


async def test_plaintext_client_on_the_tls_port_is_refused(tls_server: ZooKeeperServer) -> None:
    with pytest.raises(ConnectError):
        async with Client(tls_server.tls_hosts, connect_timeout=1.5):
            pass


@pytest.mark.both_loops
async def test_tls_handshake_is_bounded_by_the_attempt_timeout(
    tls_server: ZooKeeperServer, certs: TlsCertificates
) -> None:
    """The first host accepts TCP and never answers the TLS handshake: the attempt on it gives up
    at the attempt timeout (session timeout / hosts = 2 s) and the next host serves, well before
    the connect timeout."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    stall = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = stall.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        async with Client(
            f"127.0.0.1:{port},{tls_server.tls_hosts}",
            ssl=certs.client_context(),
            shuffle_hosts=False,
            session_timeout=4,
            connect_timeout=20,
        ) as zk:
            assert zk.connected_host == tls_server.tls_hosts
        assert time.monotonic() - started < 8
        assert held, "the stalling host was tried first"
    finally:
        for writer in held:
            writer.close()
        stall.close()
        await stall.wait_closed()


@pytest.mark.both_loops
async def test_close_is_bounded_when_the_server_is_silent(
    tls_server: ZooKeeperServer, certs: TlsCertificates
) -> None:
    """A paused server answers neither the CloseSession nor TLS's close_notify: the close still
    ends within its bounds and leaves no socket open (uvloop's would outlive its loop, an error
    at teardown)."""
    zk = Client(tls_server.tls_hosts, ssl=certs.client_context(), session_timeout=4)
    await zk.__aenter__()
    conn = zk._session._conn
    assert conn is not None
    tls_server.pause()
    try:
        started = time.monotonic()
        with anyio.fail_after(6):
            await zk.aclose()
        assert time.monotonic() - started < 4
        with anyio.fail_after(2):  # aborted, not left waiting for the paused peer's close_notify
            await conn.released.wait()
    finally:
        tls_server.resume()


def test_tls_context_names_the_file_that_does_not_load(
    tmp_path: Path, certs: TlsCertificates
) -> None:
    with pytest.raises(ValueError, match="CA file"):
        tls_context(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="client certificate"):
        tls_context(certs.ca, cert=certs.ca, key=certs.ca)
    with pytest.raises(ValueError, match="needs its certificate"):
        tls_context(certs.ca, key=certs.client_key)
    assert tls_context(certs.ca).check_hostname
    assert tls_context(certs.ca).verify_mode is ssl.CERT_REQUIRED


# -- core session behaviour, plain and over TLS -----------------------------------------------
@pytest.fixture(params=["plain", "tls"])
async def secured(
    request: pytest.FixtureRequest,
    tls_server: ZooKeeperServer,
    certs: TlsCertificates,
    namespace: str,
) -> AsyncIterator[Client]:
    if request.param == "tls":
        hosts, context = tls_server.tls_hosts, certs.client_context()
    else:
        hosts, context = tls_server.hosts, None
    async with Client(
        hosts, namespace=namespace, ssl=context, session_timeout=TEST_SESSION_TIMEOUT
    ) as zk:
        yield zk


async def test_watch_fires(secured: Client) -> None:
    fired: list[WatchEvent] = []
    came = asyncio.Event()

    def watcher(event: WatchEvent) -> None:
        fired.append(event)
        came.set()

    await secured.exists("/w", watch=watcher)
    await secured.create("/w")
    with anyio.fail_after(5):
        await came.wait()
    assert fired[0].type is EventType.NODE_CREATED


async def test_session_expiry(secured: Client, tls_server: ZooKeeperServer) -> None:
    """Expired on the server: LOST, the watch ends with EXPIRED, a new session serves."""
    ended: list[WatchEvent] = []
    await secured.create("/e", ephemeral=True)
    await secured.exists("/e", watch=ended.append)
    old = secured.session_id
    async with secured.session_events() as events:
        await expire_session(secured, host=tls_server.hosts)  # through the plain port
        with anyio.fail_after(15):
            async for event in events:
                if event.state is SessionState.CONNECTED:
                    break
    assert secured.session_id != old
    assert [e.state for e in ended] == [KeeperState.EXPIRED]
    with pytest.raises(NoNode):
        await secured.get("/e")


async def test_multi(secured: Client) -> None:
    results = await secured.multi(
        [Op.create("/m", b"x"), Op.create("/m/k", b"y"), Op.set_data("/m", b"z")]
    )
    assert len(results) == 3
    assert (await secured.get("/m"))[0] == b"z"


def test_command_line(tls_server: ZooKeeperServer, certs: TlsCertificates) -> None:
    """``--zk-tls-ca``/``--zk-tls-cert`` and ``AIOCOORD_ZK_TLS_KEY`` on a one-shot command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOCOORD_ZK")}
    out = subprocess.run(
        [
            sys.executable, "-m", "services", "tasks", "--json", "--zk", tls_server.tls_hosts,
            "--zk-tls-ca", str(certs.ca), "--zk-tls-cert", str(certs.client_cert),
        ],
        capture_output=True, text=True, timeout=60,
        env={**env, "AIOCOORD_ZK_TLS_KEY": str(certs.client_key)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
