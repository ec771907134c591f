"""Session states under real faults: cut and stalled connections (a TCP proxy), SIGSTOP and
SIGKILL of the server, server-side session expiry, unreachable and stalled hosts, and closing."""

from __future__ import annotations

import time

import anyio
import pytest

from aiocoord import (
    CREATOR_ALL_ACL,
    Client,
    ClientClosed,
    ConnectError,
    ConnectionLoss,
    RequestTimeout,
    SessionExpired,
    SessionState,
)
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session, free_port
from tests.helpers import holds, wait_state


async def test_closed_socket_is_suspended_at_once_then_reconnected(
    proxy: TcpProxy, namespace: str
) -> None:
    # a 30 s session: the read timeout (20 s) cannot be what notices the cut
    async with (
        Client(proxy.address, namespace=namespace, session_timeout=30) as zk,
        zk.session_events() as feed,
    ):
        session = zk.session_id
        await zk.create("/e", ephemeral=True)
        cut_at = time.monotonic()
        proxy.cut()
        await wait_state(feed, SessionState.SUSPENDED, 5)
        assert time.monotonic() - cut_at < 5
        await wait_state(feed, SessionState.RECONNECTED, 10)
        assert zk.session_id == session
        stat = await zk.exists("/e")
        assert stat is not None and stat.ephemeral_owner == session


async def test_in_flight_reads_are_retried_and_writes_fail_with_connection_loss(
    proxy: TcpProxy, namespace: str
) -> None:
    async with (
        Client(proxy.address, namespace=namespace, session_timeout=30) as zk,
        zk.session_events() as feed,
    ):
        await zk.create("/r", b"data")
        proxy.stall()
        results: dict[str, object] = {}

        async def read() -> None:
            results["read"] = (await zk.get("/r"))[0]

        async def write() -> None:
            try:
                await zk.set("/r", b"x")
            except ConnectionLoss as exc:
                results["write"] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            tg.start_soon(write)
            await anyio.sleep(0.3)  # both are in flight, stuck in the stalled proxy
            proxy.cut()
            proxy.resume()
            await wait_state(feed, SessionState.SUSPENDED, 5)
        assert results["read"] == b"data"
        assert isinstance(results["write"], ConnectionLoss)
        assert results["write"].retryable


async def test_silent_server_is_noticed_by_the_read_timeout(
    proxy: TcpProxy, namespace: str
) -> None:
    # noticed at 2/3 of the timeout after the last frame, the session has 1/3 left (1 s): the
    # reconnect's random delay (default up to 1 s) is kept short so RECONNECTED, not LOST, is due
    async with (
        Client(proxy.address, namespace=namespace, session_timeout=3, reconnect_delay=0.1) as zk,
        zk.session_events() as feed,
    ):
        session = zk.session_id
        timeout = zk.negotiated_timeout
        stalled_at = time.monotonic()
        proxy.stall()
        await wait_state(feed, SessionState.SUSPENDED, timeout * 2)
        noticed = time.monotonic() - stalled_at
        # noticed by the read timeout (2/3 of the session timeout), before the session expires
        assert timeout * 2 / 3 - 0.2 <= noticed < timeout
        proxy.resume()
        await wait_state(feed, SessionState.RECONNECTED, timeout * 2)
        assert zk.session_id == session


async def test_request_deadline_bounds_a_stalled_request(proxy: TcpProxy, namespace: str) -> None:
    async with Client(
        proxy.address, namespace=namespace, session_timeout=30, request_timeout=1
    ) as zk:
        proxy.stall()
        with anyio.fail_after(5), pytest.raises(RequestTimeout):
            await zk.get("/")
        proxy.resume()


async def test_server_paused_shorter_than_the_session_timeout(
    zk_private_server: ZooKeeperServer, namespace: str
) -> None:
    async with (
        Client(zk_private_server.hosts, namespace=namespace, session_timeout=6) as zk,
        zk.session_events() as feed,
    ):
        session = zk.session_id
        await zk.create("/e", ephemeral=True)
        await zk.exists("/")  # the server saw the session just now
        zk_private_server.pause()
        try:
            await wait_state(feed, SessionState.SUSPENDED, 8)
        finally:
            zk_private_server.resume()
        await wait_state(feed, SessionState.RECONNECTED, 8)
        assert zk.session_id == session
        assert await zk.exists("/e") is not None


async def test_server_side_expiry_is_lost_then_a_new_session(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    async with zk.session_events() as feed:
        old = zk.session_id
        await zk.create("/mine", ephemeral=True)
        await expire_session(zk)
        seen = await wait_state(feed, SessionState.CONNECTED, 15)
        assert seen[-2:] == [SessionState.LOST, SessionState.CONNECTED]
        assert zk.session_id not in (0, old)
        assert await zk.exists("/mine") is None  # the old session's ephemeral is gone
        await zk.create("/mine", ephemeral=True)  # and the new session works


async def test_server_killed_and_restarted_keeps_the_session(
    zk_private_server: ZooKeeperServer, namespace: str
) -> None:
    async with (
        # long: the restarted JVM may take many seconds to serve on a loaded machine
        Client(zk_private_server.hosts, namespace=namespace, session_timeout=30) as zk,
        zk.session_events() as feed,
    ):
        session = zk.session_id
        await zk.create("/e", b"kept", ephemeral=True)
        zk_private_server.kill()
        await wait_state(feed, SessionState.SUSPENDED, 5)
        created: list[str] = []

        async def create_during_outage() -> None:
            created.append(await zk.create("/during"))

        async with anyio.create_task_group() as tg:
            # made while suspended, the request waits for the reconnect instead of failing
            tg.start_soon(create_during_outage)
            await holds(lambda: created == [])
            zk_private_server.start(wait=False)
            await wait_state(feed, SessionState.RECONNECTED, 28)
        assert created == ["/during"]
        assert zk.session_id == session
        assert (await zk.get("/e"))[0] == b"kept"


async def test_client_side_timeout_declares_the_session_lost(
    proxy: TcpProxy, namespace: str
) -> None:
    async with (
        Client(proxy.address, namespace=namespace, session_timeout=2) as zk,
        zk.session_events() as feed,
    ):
        old = zk.session_id
        proxy.refuse()
        proxy.cut()
        await wait_state(feed, SessionState.SUSPENDED, 5)
        pending_error: list[BaseException] = []

        async def queued() -> None:
            try:
                await zk.get("/")
            except SessionExpired as exc:
                pending_error.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(queued)
            await wait_state(feed, SessionState.LOST, zk.negotiated_timeout + 2)
        assert len(pending_error) == 1
        proxy.accept()
        await wait_state(feed, SessionState.CONNECTED, 10)
        assert zk.session_id not in (0, old)


async def test_stalled_first_host_connects_through_the_second(
    zk_server: ZooKeeperServer, proxy: TcpProxy, namespace: str
) -> None:
    proxy.stall()  # accepts TCP, never answers the handshake
    hosts = f"{proxy.address},{zk_server.hosts}"
    with anyio.fail_after(10):
        async with Client(hosts, namespace=namespace, session_timeout=4, shuffle_hosts=False) as zk:
            assert zk.connected_host == zk_server.hosts
            await zk.create("/ok")


async def test_unreachable_ensemble_names_every_host_within_the_deadline() -> None:
    hosts = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    started = time.monotonic()
    with anyio.fail_after(10), pytest.raises(ConnectError) as info:
        async with Client(",".join(hosts), connect_timeout=2):
            pass
    assert time.monotonic() - started < 5
    for host in hosts:
        assert host in str(info.value)
    assert info.value.hosts == tuple(hosts)


async def test_close_with_requests_in_flight_never_hangs(
    zk_private_server: ZooKeeperServer, namespace: str
) -> None:
    zk = Client(zk_private_server.hosts, namespace=namespace, session_timeout=4)
    await zk.__aenter__()
    errors: list[BaseException] = []

    async def request() -> None:
        try:
            await zk.get("/")
        except ClientClosed as exc:
            errors.append(exc)

    zk_private_server.pause()
    try:
        with anyio.fail_after(8):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(request)
                await anyio.sleep(0.2)
                await zk.__aexit__(None, None, None)
    finally:
        zk_private_server.resume()
    assert len(errors) == 20
    assert zk.state is SessionState.CLOSED
    with pytest.raises(ClientClosed):
        await zk.get("/")


async def test_digest_auth_is_sent_again_after_a_reconnect(proxy: TcpProxy, namespace: str) -> None:
    async with (
        Client(proxy.address, namespace=namespace, session_timeout=30) as zk,
        zk.session_events() as feed,
    ):
        await zk.add_auth("digest", "bob:pw")
        await zk.create("/bobs", b"1", acl=CREATOR_ALL_ACL)
        proxy.cut()
        await wait_state(feed, SessionState.RECONNECTED, 10)
        # the server keeps auth per connection: this works only if the client sent it again
        await zk.set("/bobs", b"2")
        assert ("digest", "bob") in await zk.whoami()
