"""Review 13: attacks on the election's no-phantom-candidate and adopt-not-double guarantees."""

from __future__ import annotations

import anyio
import pytest

from aiocoord import Client, Election
from aiocoord.testing import ZooKeeperServer
from tests.helpers import eventually, eventually_async
from tests.transport.test_owed_deletes import count_is
from tests.transport.test_protected_create import through_proxy


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
