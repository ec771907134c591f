"""Review 13: attacks on the election's no-phantom-candidate and adopt-not-double guarantees."""

from __future__ import annotations

import anyio
import pytest

from aiocoord import Client, Election
from aiocoord.testing import ZooKeeperServer
from tests.helpers import count_is, eventually_async


async def test_leader_cancelled_from_outside_leaves_no_candidate(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """The leader's block is cancelled from outside (a task group cancelled, a deadline): the
    candidate node goes at once, while the session lives on."""
    async with Client(zk_server.hosts, namespace=namespace, session_timeout=20) as client:
        session = client.session_id
        election = Election(client, "/election")
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                leading = anyio.Event()

                async def lead() -> None:
                    async with election.lead():
                        leading.set()
                        await anyio.sleep_forever()

                tg.start_soon(lead)
                await leading.wait()
                tg.cancel_scope.cancel()
            await eventually_async(count_is(zk, "/election", 0, exactly=True), timeout=10)
        assert client.session_id == session


async def test_run_cancelled_from_outside_leaves_no_candidate(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with Client(zk_server.hosts, namespace=namespace, session_timeout=20) as client:
        election = Election(client, "/election")
        with anyio.fail_after(20):
            with anyio.move_on_after(1.0):

                async def body(term: object) -> None:
                    await anyio.sleep_forever()

                await election.run(body)
            await eventually_async(count_is(zk, "/election", 0, exactly=True), timeout=10)


class _SeesAdoptFail(Client):
    """A client that records when the adopt step's get_ephemerals() fails (a spy, no fault)."""

    adopt_failed: anyio.Event

    async def get_ephemerals(self, prefix: str = "/") -> list[str]:
        try:
            return await super().get_ephemerals(prefix)
        except Exception:
            self.adopt_failed.set()
            raise


async def test_candidate_create_lost_then_adopt_lost_is_not_doubled(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """The candidate's create is applied and its reply lost (ConnectionLoss); after the
    reconnect the adopt step's own read (get_ephemerals) times out: a second candidate must not
    be created beside the first, or our own phantom node stands ahead of us (and everyone)."""
    from aiocoord.testing import TcpProxy

    await zk.ensure_path("/election")
    with TcpProxy.to(zk_server.hosts) as proxy:
        client = _SeesAdoptFail(
            proxy.address, namespace=namespace, session_timeout=20, request_timeout=1.0
        )
        client.adopt_failed = anyio.Event()
        async with client:
            session = client.session_id
            leading = anyio.Event()
            with anyio.fail_after(40):
                async with anyio.create_task_group() as tg:

                    async def contend() -> None:
                        async with Election(client, "/election").lead():
                            leading.set()
                            await anyio.sleep_forever()

                    proxy.stall_replies()
                    tg.start_soon(contend)
                    await eventually_async(count_is(zk, "/election", 1), timeout=10)
                    # the create's reply is lost; after the reconnect no request gets through
                    proxy.refuse()
                    proxy.cut()
                    proxy.resume()
                    proxy.pass_handshakes_only()
                    proxy.accept()
                    await client.adopt_failed.wait()  # RequestTimeout of the adopt's read
                    proxy.resume()
                    with anyio.move_on_after(10):
                        await leading.wait()
                    kids = await zk.children("/election")
                    tg.cancel_scope.cancel()
            assert client.session_id == session
            assert len(kids) == 1, kids
            assert leading.is_set()


@pytest.mark.parametrize("leaders", [1, 2])
async def test_lead_cancelled_at_any_point_leaves_no_candidate(
    zk_server: ZooKeeperServer, namespace: str, zk: Client, leaders: int
) -> None:
    """lead() cancelled after 0..N loop turns or a few ms (waiting for the session, creating,
    ranking, inside _take, leading, resigning): no candidate node stays while the session
    lives."""
    async with Client(zk_server.hosts, namespace=namespace, session_timeout=20) as client:
        session = client.session_id
        with anyio.fail_after(120):
            for i in range(40):
                election = Election(client, "/election", leaders=leaders)
                with anyio.move_on_after(0.0005 * i):
                    async with election.lead():
                        await anyio.sleep_forever()
                await eventually_async(count_is(zk, "/election", 0, exactly=True), timeout=10)
                for _ in range(i % 7):  # also cancel right at loop turns
                    await anyio.lowlevel.checkpoint()
        assert client.session_id == session
