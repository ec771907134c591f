"""Read-only mode against a real 3-member ensemble (``readonlymode.enabled``): a member cut off
from its quorum serves a ``read_only=True`` client in the READ_ONLY state; the client keeps looking
for a read/write server and, when the quorum is back, moves to it with a new session (its watches
restored), never a LOST."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from aiocoord import Client, SessionState
from aiocoord.testing import ZooKeeperEnsemble
from aiocoord.transport.errors import NotReadOnly
from tests.helpers import Recorder, wait_state

pytestmark = pytest.mark.ensemble


@pytest.fixture
def ro_ensemble() -> Iterator[ZooKeeperEnsemble]:
    with ZooKeeperEnsemble(3, read_only_mode=True) as ensemble:
        yield ensemble


async def test_read_only_while_cut_off_then_read_write_without_a_loss(
    ro_ensemble: ZooKeeperEnsemble, namespace: str
) -> None:
    async with Client(ro_ensemble.hosts, namespace=namespace, session_timeout=10) as writer:
        await writer.create("/cfg", b"v1")
    survivor = 0
    async with (
        Client(
            ro_ensemble.member_hosts(survivor),
            namespace=namespace,
            session_timeout=4,
            read_only=True,
            reconnect_delay=0.1,
        ) as zk,
        zk.session_events() as feed,
    ):
        for i in (1, 2):
            ro_ensemble.members[i].kill()
        await wait_state(feed, SessionState.READ_ONLY, 30)
        assert zk.session_id != 0
        assert (await zk.get("/cfg"))[0] == b"v1"  # reads are served
        with pytest.raises(NotReadOnly):
            await zk.set("/cfg", b"no")
        changed = Recorder()
        await zk.get("/cfg", watch=changed)
        for i in (1, 2):
            ro_ensemble.members[i].start()
        states = await wait_state(feed, SessionState.CONNECTED, 60)
        assert SessionState.LOST not in states, states
        async with Client(ro_ensemble.hosts, namespace=namespace, session_timeout=10) as writer:
            await writer.set("/cfg", b"v2")
        await changed.wait(1, timeout=10)  # the watch set while read-only was restored
        await zk.set("/cfg", b"v3")  # a read/write session now
        with anyio.fail_after(5):
            assert (await zk.get("/cfg"))[0] == b"v3"
