"""Deletes owed after a connection blip (``Client.delete_ephemeral``): a delete whose outcome was
lost is sent again after the reconnect, so the node does not stay while the session lives on;
it never removes a node that is no longer this session's, nor one this client created again.
Recipes resign, deregister and release through it (the election and discovery tests below)."""

from __future__ import annotations

import anyio

from aiocoord import Client, Election, ServiceRegistry, SessionState
from aiocoord.testing import TcpProxy, ZooKeeperServer
from tests.helpers import count_is, eventually, eventually_async, gone
from tests.transport.test_protected_create import lose_reply, lose_request, through_proxy


async def stays(zk: Client, path: str, owner: int, seconds: float = 2.0) -> None:
    """A bounded observation window: ``path`` exists, held by ``owner``, throughout."""
    with anyio.move_on_after(seconds):
        while True:
            stat = await zk.exists(path)
            assert stat is not None and stat.ephemeral_owner == owner
            await anyio.sleep(0.05)


async def test_a_delete_whose_request_was_lost_is_sent_after_the_reconnect(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        await client.create("/node", ephemeral=True)
        session = client.session_id
        outcome = await lose_request(proxy, lambda: client.delete_ephemeral("/node"))
        assert outcome.error is None and outcome.value is False  # owed, not done
        await eventually_async(gone(zk, "/node"), timeout=15)
        assert client.session_id == session  # the session lived on: only the owed delete did it
        assert not client._session.owed


async def test_a_delete_cancelled_in_flight_is_owed(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        await client.create("/node", ephemeral=True)
        proxy.stall()
        with anyio.fail_after(20):
            with anyio.move_on_after(0.5):
                await client.delete_ephemeral("/node")
            await eventually(lambda: proxy.held_requests > 0, timeout=10)
            proxy.cut()
            proxy.resume()
            await eventually_async(gone(zk, "/node"), timeout=15)


async def test_an_owed_delete_spares_a_node_another_session_holds_now(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """The delete was applied and its reply lost; while we were away another session created
    the same name: the owed delete finds the node is not ours and leaves it."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        await client.create("/node", ephemeral=True)
        proxy.refuse()  # after the cut, no reconnect until the other session holds the node

        async def delete_then_other_creates() -> bool:
            done = await client.delete_ephemeral("/node")
            await zk.create("/node", ephemeral=True)
            proxy.accept()
            return done

        outcome = await lose_reply(proxy, delete_then_other_creates, gone(zk, "/node"))
        assert outcome.error is None and outcome.value is False
        with anyio.fail_after(15):
            await client.wait_connected()
        await client.sync("/")
        await stays(zk, "/node", zk.session_id)
        assert not client._session.owed


async def test_an_owed_delete_is_forgiven_when_this_client_creates_the_node_again(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        await client.create("/node", ephemeral=True)
        session = client.session_id
        proxy.refuse()

        async def delete_then_create_again() -> bool:
            done = await client.delete_ephemeral("/node")
            async with anyio.create_task_group() as tg:
                # queued while disconnected: sent (and answered) after the reconnect
                tg.start_soon(lambda: client.create("/node", b"again", ephemeral=True))
                await anyio.sleep(0.1)
                proxy.accept()
            return done

        outcome = await lose_reply(proxy, delete_then_create_again, gone(zk, "/node"))
        assert outcome.error is None and outcome.value is False
        await stays(zk, "/node", session)
        assert (await zk.get("/node"))[0] == b"again"


async def test_an_owed_delete_is_dropped_with_its_session(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        await client.create("/node", ephemeral=True)
        proxy.refuse()
        outcome = await lose_request(proxy, lambda: client.delete_ephemeral("/node"))
        assert outcome.value is False and client._session.owed
        states: list[SessionState] = []
        client.add_listener(lambda event: states.append(event.state))
        await eventually(lambda: SessionState.LOST in states, timeout=40)
        assert not client._session.owed
        proxy.accept()


# -- the recipes that resign and deregister through it -----------------------------------------
async def lose_the_delete_of(proxy: TcpProxy, leave: anyio.CancelScope) -> None:
    """Hold every request, end ``leave`` (a block whose exit deletes a node), wait until the
    delete is held, cut: the delete never reached the server."""
    proxy.stall()
    leave.cancel()
    await eventually(lambda: proxy.held_requests > 0, timeout=10)
    proxy.cut()
    proxy.resume()


async def test_cancelled_waiting_candidate_whose_delete_was_lost_leaves_no_phantom(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """A waiting candidate is cancelled (issue 13 #6) and its resign is lost in a blip (#7): the
    delete is owed and done after the reconnect, not when the 20 s session ends."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        session = client.session_id
        a = Election(client, "/election", identity="a")
        async with Election(zk, "/election", identity="b").lead():
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    waiting = anyio.CancelScope()

                    async def a_waits() -> None:
                        with waiting:
                            async with a.lead():
                                raise AssertionError("a cannot lead while b does")

                    tg.start_soon(a_waits)
                    await eventually_async(count_is(zk, "/election", 2), timeout=10)
                    await lose_the_delete_of(proxy, waiting)
            await eventually_async(count_is(zk, "/election", 1, exactly=True), timeout=15)
        assert client.session_id == session


async def test_a_deregistration_whose_delete_was_lost_is_done_after_the_reconnect(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        session = client.session_id
        registry = ServiceRegistry(client, "/services")
        path = "/services/api/i1"
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                registered = anyio.CancelScope()

                async def register() -> None:
                    with registered:
                        async with registry.register("api", "127.0.0.1", 80, instance_id="i1"):
                            await anyio.sleep_forever()

                tg.start_soon(register)
                await eventually_async(lambda: exists(zk, path), timeout=10)
                await lose_the_delete_of(proxy, registered)
        await eventually_async(gone(zk, path), timeout=15)
        assert client.session_id == session


async def exists(zk: Client, path: str) -> bool:
    return await zk.exists(path) is not None


async def test_candidate_cancelled_with_its_create_in_flight_leaves_no_node(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """Cancelled while the candidate's create is applied but unanswered: the create is seen to
    its end and the node deleted, not left behind as a phantom candidate."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        await zk.ensure_path("/election")
        session = client.session_id
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                contending = anyio.CancelScope()

                async def contend() -> None:
                    with contending:
                        async with Election(client, "/election").lead():
                            await anyio.sleep_forever()

                proxy.stall_replies()
                tg.start_soon(contend)
                await eventually_async(count_is(zk, "/election", 1), timeout=10)
                contending.cancel()
                proxy.resume()
        assert await zk.children("/election") == []
        assert client.session_id == session


async def test_only_ours_cancelled_during_its_look_owes_the_delete(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """A deregistration that must not delete another session's node looks first; cancelled with
    that look in flight (a deregistration bounded in time, on a stalled link), the delete is
    owed all the same (the owed delete checks the owner), so a blip never leaves a
    deregistered node behind while the session lives on."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        await client.create("/node", ephemeral=True)
        session = client.session_id
        proxy.stall()
        with anyio.fail_after(20):
            with anyio.move_on_after(0.5):
                await client.delete_ephemeral("/node", only_ours=True)
            assert proxy.held_requests > 0  # the look was sent, and held
            proxy.cut()
            proxy.resume()
            await eventually_async(gone(zk, "/node"), timeout=15)
        assert client.session_id == session
        assert not client._session.owed


async def test_only_ours_spares_another_sessions_node(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (_, client):
        await zk.create("/node", ephemeral=True)
        with anyio.fail_after(10):
            assert await client.delete_ephemeral("/node", only_ours=True)  # nothing of ours
        await stays(zk, "/node", zk.session_id, seconds=0.5)
        await client.create("/mine", ephemeral=True)
        with anyio.fail_after(10):
            assert await client.delete_ephemeral("/mine", only_ours=True)
        assert await zk.exists("/mine") is None
