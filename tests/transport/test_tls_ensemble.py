"""TLS to a 3-member ensemble (server verification only, ``ssl.clientAuth=none``): the session
moves to another member's TLS port when the one it uses is killed (-9)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from aiocoord import Client, SessionState
from aiocoord.testing import TlsCertificates, ZooKeeperEnsemble

pytestmark = pytest.mark.ensemble


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsCertificates:
    return TlsCertificates(tmp_path_factory.mktemp("tls-ensemble"))


@pytest.fixture(scope="module")
def tls_ensemble(certs: TlsCertificates) -> Iterator[ZooKeeperEnsemble]:
    with ZooKeeperEnsemble(3, tls=certs.server_tls("none")) as ensemble:
        yield ensemble


@pytest.mark.both_loops
async def test_reconnect_over_tls_after_a_member_is_killed(
    tls_ensemble: ZooKeeperEnsemble, certs: TlsCertificates, namespace: str
) -> None:
    context = certs.client_context(client_cert=False)
    # each member's first TLS handshake (a cold JVM path) can take seconds on a loaded machine:
    # made once here, so the failover below measures the client, not the JVM's warm-up
    for host in tls_ensemble.tls_hosts.split(","):
        async with Client(host, ssl=context, session_timeout=10):
            pass
    async with Client(
        tls_ensemble.tls_hosts, namespace=namespace, ssl=context, session_timeout=10
    ) as zk:
        await zk.create("/eph", b"mine", ephemeral=True)
        session, first = zk.session_id, zk.connected_host
        victim = tls_ensemble.tls_index_of(first)
        try:
            async with zk.session_events() as events:
                tls_ensemble.members[victim].kill()
                with anyio.fail_after(30):
                    async for event in events:
                        if event.state is SessionState.RECONNECTED:
                            break
            assert zk.session_id == session
            assert zk.connected_host != first
            assert zk.connected_host in tls_ensemble.tls_hosts.split(",")
            assert (await zk.get("/eph"))[0] == b"mine"
            await zk.set("/eph", b"after")
        finally:
            tls_ensemble.members[victim].start()
            tls_ensemble.wait_serving()
