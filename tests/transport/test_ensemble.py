"""A 3-member ensemble: the member a client is connected to dies; the session moves, unharmed."""

from __future__ import annotations

from aiocoord import Client, SessionState
from aiocoord.testing import ZooKeeperEnsemble
from tests.helpers import wait_state


async def test_member_killed_under_the_client_moves_the_session(
    zk_ensemble: ZooKeeperEnsemble, namespace: str
) -> None:
    async with (
        Client(zk_ensemble.hosts, namespace=namespace, session_timeout=10) as zk,
        zk.session_events() as feed,
    ):
        session = zk.session_id
        await zk.create("/owned", b"mine", ephemeral=True)
        first = zk.connected_host
        victim = zk_ensemble.index_of(first)
        zk_ensemble.members[victim].kill()
        await wait_state(feed, SessionState.SUSPENDED, 5)
        seen = await wait_state(feed, SessionState.RECONNECTED, 20)
        assert SessionState.LOST not in seen
        assert zk.session_id == session
        assert zk.connected_host not in (None, first)
        data, stat = await zk.get("/owned")
        assert data == b"mine" and stat.ephemeral_owner == session
        await zk.set("/owned", b"still mine")


async def test_ensemble_wide_reads_see_writes_after_sync(
    zk_ensemble: ZooKeeperEnsemble, namespace: str
) -> None:
    members = [m.address for m in zk_ensemble.members]
    async with (
        Client(members[0], namespace=namespace) as a,
        Client(members[1], namespace=namespace) as b,
    ):
        await a.create("/x", b"1")
        await b.sync("/x")
        assert (await b.get("/x"))[0] == b"1"
