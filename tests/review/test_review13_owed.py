"""Review 13: attacks on "a delete of ours never removes a node of another session, nor one this
client created again" (``Client.delete_ephemeral`` and the recipes that call it)."""

from __future__ import annotations

import anyio

from aiocoord import Client, ServiceRegistry, SessionState
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from tests.helpers import eventually
from tests.transport.test_owed_deletes import stays


async def test_deregistering_after_a_lost_session_spares_the_name_another_session_holds(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """Our session expires while we are cut off; meanwhile another session registers the same
    instance id (a replacement process). We come back on a new session (hold_ephemeral waits for
    the other holder, never deletes it) and then leave the register block: the deregistration
    must not delete the other session's node."""
    path = "/services/api/i1"
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=namespace, session_timeout=6) as client:
            registry = ServiceRegistry(client, "/services")
            states: list[SessionState] = []
            client.add_listener(lambda event: states.append(event.state))
            with anyio.fail_after(60):
                async with registry.register("api", "127.0.0.1", 80, instance_id="i1"):
                    old = client.session_id
                    proxy.refuse()
                    proxy.cut()
                    await expire_session(client, host=zk_server.hosts)
                    await eventually(lambda: SessionState.SUSPENDED in states, timeout=10)
                    # the replacement registers the same instance id
                    await zk.create(path, b"other", ephemeral=True, makepath=True)
                    proxy.accept()
                    await eventually(lambda: SessionState.CONNECTED in states, timeout=30)
                    assert client.session_id != old
                # the registration ended (deregistered): the other's node must stay
                await stays(zk, path, zk.session_id, seconds=2.0)


async def test_a_stale_owed_delete_spares_a_sequential_node_created_again_under_its_name(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """A delete cancelled in flight is owed although the server applied it (its reply came after
    the caller gave up). The parent is recreated, so this client's next sequential create gets
    the very same name. After the next reconnect the owed delete must not remove that new node:
    this client created it again after owing the delete."""
    from tests.transport.test_protected_create import through_proxy

    await zk.ensure_path("/p")
    async with through_proxy(zk_server, namespace) as (proxy, client):
        session = client.session_id
        first = await client.create("/p/n-", ephemeral=True, sequential=True)
        with anyio.fail_after(30):
            proxy.stall_replies()
            with anyio.move_on_after(0.5):
                await client.delete_ephemeral(first)  # applied; its reply held: cancelled
            await eventually_gone(zk, first)
            proxy.resume()
            assert client._session.owed  # owed, although done
            await zk.delete("/p")
            await zk.create("/p")
            again = await client.create("/p/n-", ephemeral=True, sequential=True)
            assert again == first  # the same name, a new node of this session
            states: list[SessionState] = []
            client.add_listener(lambda event: states.append(event.state))
            proxy.cut()
            await eventually(lambda: SessionState.RECONNECTED in states, timeout=20)
            await client.sync("/")
            await stays(zk, again, session, seconds=2.0)


async def eventually_gone(zk: Client, path: str) -> None:
    from tests.helpers import eventually_async

    async def gone() -> bool:
        return await zk.exists(path) is None

    await eventually_async(gone, timeout=10)


async def test_a_delete_timed_out_on_a_live_connection_is_done(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """request_timeout shorter than the read timeout: RequestTimeout while the connection lives
    on (no reconnect, so no pay): the delete still ends up done. (Held.)"""
    from tests.helpers import eventually_async

    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(
            proxy.address, namespace=namespace, session_timeout=20, request_timeout=0.5
        ) as client:
            session = client.session_id
            await client.create("/node", ephemeral=True)
            with anyio.fail_after(30):
                proxy.stall()
                assert await client.delete_ephemeral("/node") is False  # RequestTimeout: owed
                proxy.resume()

                async def gone() -> bool:
                    return await zk.exists("/node") is None

                await eventually_async(gone, timeout=10)
            assert client.session_id == session


async def test_an_owed_delete_whose_pay_is_cut_is_paid_after_the_next_reconnect(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """The delete's request is lost; after the reconnect the pay's own requests are held and the
    connection cut again (twice): the delete is still paid after a later reconnect. (Held.)"""
    from tests.helpers import eventually_async
    from tests.transport.test_protected_create import lose_request, through_proxy

    async with through_proxy(zk_server, namespace) as (proxy, client):
        session = client.session_id
        await client.create("/node", ephemeral=True)
        states: list[SessionState] = []
        client.add_listener(lambda event: states.append(event.state))
        proxy.refuse()
        outcome = await lose_request(proxy, lambda: client.delete_ephemeral("/node"))
        assert outcome.value is False
        with anyio.fail_after(60):
            for _ in range(2):
                proxy.pass_handshakes_only()
                proxy.accept()
                seen = states.count(SessionState.RECONNECTED)
                await eventually(
                    lambda seen=seen: states.count(SessionState.RECONNECTED) > seen, timeout=20
                )
                await eventually(lambda: proxy.held_requests > 0, timeout=10)  # the pay, held
                proxy.refuse()
                proxy.cut()
                proxy.resume()
            assert await zk.exists("/node") is not None
            proxy.accept()

            async def gone() -> bool:
                return await zk.exists("/node") is None

            await eventually_async(gone, timeout=20)
        assert client.session_id == session
        assert not client._session.owed
