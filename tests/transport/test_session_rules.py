"""The session rules of issue 12, each against a real ZooKeeper (a scripted server only for frames a
real server cannot send): refused credentials, reconnect pacing, a rebuilt ensemble, closing and
failed enters, namespaces under restricted parents, handshake bounds, every address of a name,
dead handshakes, undecodable replies, watch removal races, async watchers, the LOST deadline."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from contextlib import AsyncExitStack

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus

from aiocoord import (
    ACL,
    ApiError,
    AuthFailed,
    Client,
    ClientClosed,
    ConnectError,
    ConnectionLoss,
    NoAuth,
    Op,
    Perm,
    ProtocolError,
    RequestTimeout,
    SessionState,
    WatchEvent,
    digest_acl,
)
from aiocoord.testing import (
    ScriptedServer,
    TcpProxy,
    ZooKeeperServer,
    four_letter_word,
    free_port,
    reply_frame,
)
from aiocoord.transport import hosts as hosts_module
from tests.helpers import Recorder, wait_state

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _sessions_on(server: ZooKeeperServer) -> str:
    host, _, port = server.hosts.rpartition(":")
    return four_letter_word(host, int(port), "cons")


# -- 1. refused credentials ------------------------------------------------------------------


async def test_refused_credentials_fail_the_connect_without_a_reconnect_loop(
    zk_server: ZooKeeperServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiocoord.transport")
    client = Client(zk_server.hosts, auth=[("nosuchscheme", "x")], session_timeout=4)
    with anyio.fail_after(5), pytest.raises(AuthFailed):
        async with client:
            pytest.fail("entered with refused credentials")
    assert client.state is SessionState.CLOSED
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]


async def test_a_refusal_on_reconnect_is_terminal(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiocoord.transport")
    # ZooKeeper's "key" scheme accepts a number that is a multiple of the data of /key: change
    # /key and the credential accepted at connect is refused when sent again on reconnect
    provider = (
        "-Dzookeeper.authProvider.1=org.apache.zookeeper.server.auth.KeyAuthenticationProvider"
    )
    with ZooKeeperServer(extra_jvm_args=[provider]) as server, TcpProxy.to(server.hosts) as front:
        async with Client(server.hosts, session_timeout=4) as admin:
            await admin.create("/key", b"5")
            client = Client(
                front.address, auth=[("key", "10")], session_timeout=4, reconnect_delay=0.1
            )
            async with client, client.session_events() as feed:
                await client.get("/key")
                await admin.set("/key", b"3")
                front.cut()
                seen = await wait_state(feed, SessionState.AUTH_FAILED, 10)
                assert SessionState.LOST not in seen
                with pytest.raises(AuthFailed):
                    await client.get("/")
                with pytest.raises(AuthFailed):
                    await client.wait_connected()
                # no reconnect loop: nothing more happens
                with anyio.move_on_after(1.5):
                    event = await feed.__anext__()
                    pytest.fail(f"session event after AUTH_FAILED: {event}")
            assert client.state is SessionState.CLOSED
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]


async def test_a_refused_add_auth_raises_and_the_session_goes_on(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with (
        Client(zk_server.hosts, namespace=namespace, session_timeout=4) as zk,
        zk.session_events() as feed,
    ):
        session = zk.session_id
        with anyio.fail_after(5), pytest.raises(AuthFailed):
            await zk.add_auth("nosuchscheme", "x")
        # the server drops the connection after refusing; the session is taken up again
        await wait_state(feed, SessionState.RECONNECTED, 5)
        assert zk.session_id == session
        await zk.create("/after", b"ok")
        assert (await zk.get("/after"))[0] == b"ok"


# -- 2. reconnect pacing -----------------------------------------------------------------------


async def test_clients_of_a_dropped_server_reconnect_spread_over_the_delay(
    proxy: TcpProxy, namespace: str
) -> None:
    reconnected: list[float] = []

    async def watch(client: Client, task_status: TaskStatus[None]) -> None:
        async with client.session_events() as feed:
            task_status.started()
            await wait_state(feed, SessionState.RECONNECTED, 10)
            reconnected.append(time.monotonic())

    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                Client(proxy.address, namespace=namespace, session_timeout=20)
            )
            for _ in range(8)
        ]
        async with anyio.create_task_group() as tg:
            for c in clients:
                await tg.start(watch, c)
            cut_at = time.monotonic()
            proxy.cut()
    spread = max(reconnected) - min(reconnected)
    # uniform over 0-1 s: 8 draws spanning under 0.3 s is a chance of about 2 in 10,000
    assert spread > 0.3, f"reconnects within {spread:.3f}s: no random delay"
    assert max(reconnected) - cut_at < 3


async def test_backoff_while_every_host_fails(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiocoord.transport")
    port = free_port()  # nothing listens: every attempt is refused at once
    with anyio.fail_after(10), pytest.raises(ConnectError):
        async with Client(f"127.0.0.1:{port}", connect_timeout=3):
            pass
    attempts = [r for r in caplog.records if r.getMessage().startswith("connect to")]
    # 0.05 s doubling up to 2 s, with jitter: a handful in 3 s; without backoff, thousands
    assert 3 <= len(attempts) <= 12, len(attempts)


# -- 3. a rebuilt ensemble ---------------------------------------------------------------------


async def test_a_server_rebuilt_with_older_data_gets_a_new_session(
    zk_private_server: ZooKeeperServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        Client(zk_private_server.hosts, session_timeout=2, reconnect_delay=0.1) as zk,
        zk.session_events() as feed,
    ):
        for i in range(30):
            await zk.create(f"/n{i}")
        seen = zk.last_zxid
        assert seen > 20
        zk_private_server.restart(wipe=True)  # empty data dir: its zxid starts again near 0
        states = await wait_state(feed, SessionState.CONNECTED, 15)
        assert SessionState.LOST in states
        assert zk.last_zxid < seen
        await zk.create("/fresh")
    behind = [r for r in caplog.records if "is behind this client" in r.getMessage()]
    assert behind and all(r.levelno == logging.WARNING for r in behind)


# -- 4 / 5. closing and failed enters -----------------------------------------------------------


async def test_close_ends_every_request_when_the_connection_dies_meanwhile(
    proxy: TcpProxy, namespace: str
) -> None:
    zk = Client(proxy.address, namespace=namespace, session_timeout=20)
    await zk.__aenter__()
    await zk.create("/x", b"x")
    proxy.stall()  # requests and the closeSession stay in flight
    outcomes: list[BaseException] = []

    async def read() -> None:
        try:
            await zk.get("/x")
        except Exception as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(read)
        await anyio.sleep(0.2)
        tg.start_soon(zk.aclose)
        await anyio.sleep(0.3)  # aclose waits for the closeSession reply
        proxy.cut()  # ...and the connection dies under it
        proxy.resume()
        with anyio.fail_after(5):
            while len(outcomes) < 5:  # noqa: ASYNC110 - the reads report by appending
                await anyio.sleep(0.01)
    assert all(isinstance(e, ClientClosed | ConnectionLoss) for e in outcomes), outcomes


async def test_a_failed_enter_leaves_no_session(zk_server: ZooKeeperServer, namespace: str) -> None:
    async with Client(zk_server.hosts, session_timeout=4) as admin:
        # a parent nobody else may create in, and nothing provisioned under it
        await admin.create(namespace, makepath=True, acl=[digest_acl("admin", "pw"), _READ_ALL])
    client = Client(zk_server.hosts, namespace=f"{namespace}/tenant", session_timeout=4)
    with anyio.fail_after(5), pytest.raises(NoAuth):
        await client.__aenter__()
    assert client.state is SessionState.CLOSED
    assert f"sid=0x{client.session_id:x}" not in _sessions_on(zk_server)
    with pytest.raises(ClientClosed):
        await client.get("/")


_READ_ALL = ACL(Perm.READ, "world", "anyone")


# -- 6. a provisioned namespace under a restricted parent ----------------------------------------


async def test_an_existing_namespace_under_a_restricted_parent_is_used(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with Client(zk_server.hosts, session_timeout=4) as admin:
        await admin.add_auth("digest", "admin:pw")
        await admin.create(namespace, makepath=True, acl=[digest_acl("admin", "pw"), _READ_ALL])
        await admin.create(f"{namespace}/t1")  # provisioned for the tenant, open
    async with Client(zk_server.hosts, namespace=f"{namespace}/t1", session_timeout=4) as zk:
        await zk.create("/mine", b"ok")
        assert (await zk.get("/mine"))[0] == b"ok"


# -- 8. handshake attempts bounded by the negotiated timeout --------------------------------------


async def test_a_black_holed_member_does_not_outlast_the_negotiated_timeout(
    namespace: str,
) -> None:
    with (
        ZooKeeperServer(max_session_timeout_ms=4000) as server,
        TcpProxy.to(server.hosts) as front,
        socket.socket() as hole,
    ):
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)  # accepts TCP, never answers
        black = f"127.0.0.1:{hole.getsockname()[1]}"
        async with (
            # asks for 30 s; the server grants 4 s. An attempt bounded by 30 s / 2 hosts would
            # hang on the black hole past the session's life.
            Client(
                f"{front.address},{black}",
                namespace=namespace,
                session_timeout=30,
                shuffle_hosts=False,
                reconnect_delay=0.2,
            ) as zk,
            zk.session_events() as feed,
        ):
            assert zk.negotiated_timeout == 4
            session = zk.session_id
            front.cut()  # the lost host goes last: the black hole is tried first
            states = await wait_state(feed, SessionState.RECONNECTED, 8)
            assert SessionState.LOST not in states
            assert zk.session_id == session


# -- 9. every address of a name ------------------------------------------------------------------


async def test_every_address_of_a_name_is_tried(
    zk_server: ZooKeeperServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(zk_server.hosts.rpartition(":")[2])
    with socket.socket() as hole:
        hole.bind(("127.0.0.2", port))  # the same port on another loopback address: a stalled pod
        hole.listen(16)

        async def resolve(name: str, p: int) -> list[str]:
            assert name == "zk.service.test"
            return ["127.0.0.2", "127.0.0.1"]  # the stalled one first, as DNS may order it

        monkeypatch.setattr(hosts_module, "resolve", resolve)
        async with Client(
            f"zk.service.test:{port}",
            namespace=namespace,
            session_timeout=4,
            shuffle_hosts=False,
        ) as zk:
            assert zk.connected_host == f"127.0.0.1:{port}"
            await zk.create("/via-second-address")


# -- 10 / 11. dead handshakes and undecodable replies (scripted server) ---------------------------


async def test_a_connection_dying_in_the_handshake_is_never_used() -> None:
    # every connection hangs up inside the handshake's answer: none may be reported live
    async with ScriptedServer(die_inside_handshake=True) as srv:
        client = Client(srv.address, session_timeout=4, connect_timeout=1.5, reconnect_delay=0)
        async with client.session_events() as feed:
            with anyio.fail_after(5), pytest.raises(ConnectError):
                async with client:
                    pytest.fail("a dead connection was installed")
            with anyio.fail_after(1):
                states = [event.state async for event in feed]  # closed with the client
        assert not any(state.live for state in states), states
        assert srv.connections >= 2  # it kept trying, with other connections


async def test_an_undecodable_reply_fails_its_request_and_drops_the_connection() -> None:
    def script(xid: int, opcode: int, body: bytes) -> bytes | None:
        if opcode == 4:  # getData: a buffer that claims more bytes than the frame has
            return reply_frame(xid, 1, 0, struct.pack(">i", 1000) + b"short")
        if opcode == 14:  # multi: a header and nothing after it
            return reply_frame(xid, 1, 0, struct.pack(">i", 1))
        return None

    async with (
        ScriptedServer(script) as srv,
        Client(srv.address, session_timeout=4, reconnect_delay=0) as zk,
    ):
        with anyio.fail_after(3), pytest.raises(ProtocolError):
            await zk.get("/x")
        with anyio.fail_after(3):
            await zk.wait_connected()
        with anyio.fail_after(3), pytest.raises(ProtocolError):
            await zk.multi([Op.check("/x")])
        with anyio.fail_after(3):
            while srv.connections < 3:  # noqa: ASYNC110 - each bad reply drops the connection
                await anyio.sleep(0.01)


# -- 12. remove_watch never removes a server watch that a read in flight set ------------------


async def test_removing_a_watcher_keeps_the_server_watch_a_read_in_flight_needs(zk: Client) -> None:
    await zk.create("/w", b"0")
    first, second = Recorder(), Recorder()
    await zk.get("/w", watch=first)
    pending = asyncio.ensure_future(zk.get("/w", watch=second))
    await asyncio.sleep(0)  # the second read is on the wire
    await zk.remove_watch("/w", first)  # RemoveWatches goes out after that read
    await pending
    await zk.set("/w", b"1")
    events = await second.wait(1, timeout=5)
    assert events[0].path == "/w"
    assert first.events == []


# -- 15. LOST no later than the server can have expired the session --------------------------------


async def test_lost_is_reported_within_the_timeout_of_the_last_frame(
    proxy: TcpProxy, namespace: str
) -> None:
    async with (
        Client(proxy.address, namespace=namespace, session_timeout=3) as zk,
        zk.session_events() as feed,
    ):
        timeout = zk.negotiated_timeout
        await zk.exists("/")  # a frame now
        stalled_at = time.monotonic()
        proxy.stall()
        await wait_state(feed, SessionState.LOST, timeout * 3)
        late = time.monotonic() - stalled_at
        # counted from when the loss was noticed (2/3 of the timeout) it would be 5/3 of it
        assert late <= timeout + 0.3, f"LOST {late:.2f}s after the last frame (timeout {timeout})"
        proxy.resume()
        await wait_state(feed, SessionState.CONNECTED, 10)


# -- 17. async watchers ----------------------------------------------------------------------------


async def test_an_async_watcher_runs(zk: Client) -> None:
    seen: list[WatchEvent] = []
    done = anyio.Event()

    async def watcher(event: WatchEvent) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(event)
        done.set()

    await zk.create("/aw", b"0")
    await zk.get("/aw", watch=watcher)
    await zk.set("/aw", b"1")
    with anyio.fail_after(5):
        await done.wait()
    assert seen[0].path == "/aw"


# -- 18. errors ------------------------------------------------------------------------------------


def test_request_timeout_is_an_api_error() -> None:
    assert issubclass(RequestTimeout, ApiError)
    assert RequestTimeout.code == -122


# -- 7. LOST once: a handshake in flight at the client-side LOST, answered "expired" --------------


async def test_a_stale_expired_answer_neither_repeats_lost_nor_fails_new_requests(
    proxy: TcpProxy, namespace: str
) -> None:
    async with (
        Client(proxy.address, namespace=namespace, session_timeout=2, reconnect_delay=0) as zk,
        zk.session_events() as feed,
    ):
        old = zk.session_id
        proxy.stall()  # read timeout, then a reconnect whose handshake is held in the proxy
        states = await wait_state(feed, SessionState.LOST, 6)
        created = asyncio.ensure_future(zk.create("/after-lost", b"new"))  # for the next session
        await anyio.sleep(0.5)  # the server expires the session meanwhile
        proxy.resume()  # the held handshake of the old session is answered "expired"
        states += await wait_state(feed, SessionState.CONNECTED, 10)
        with anyio.fail_after(5):
            assert await created == "/after-lost"
        assert states.count(SessionState.LOST) == 1, states
        assert zk.session_id not in (0, old)
        # and no second LOST arrives afterwards
        await zk.sync("/")
        with anyio.move_on_after(0.5):
            event = await feed.__anext__()
            pytest.fail(f"unexpected session event {event}")
