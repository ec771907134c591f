"""Service registry and discovery against a real ZooKeeper: round trip, updates, health checks
against a real TCP server, session expiry, a cut discovery connection, kill -9 of a registered
process, a kazoo-registered legacy instance, pick strategies and bad input."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest
from kazoo.client import KazooClient

from aiocoord import (
    Client,
    InvalidInstance,
    NoInstances,
    PayloadTooLarge,
    ServiceCache,
    ServiceEvent,
    ServiceInstance,
    ServiceRegistry,
    SessionState,
    Strategy,
    parse_check,
    tcp_check,
)
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session, free_port
from aiocoord.transport import codec
from tests.helpers import eventually, eventually_async, wait_state


def ids(cache: ServiceCache) -> list[str]:
    return [i.id for i in cache.instances()]


async def next_event(events: AsyncIterator[ServiceEvent], timeout: float = 10) -> ServiceEvent:
    with anyio.fail_after(timeout):
        return await events.__anext__()


async def test_register_discover_update_deregister(zk: Client) -> None:
    registry = ServiceRegistry(zk, "/service/business")
    async with registry.discovery("what") as cache:
        assert cache.instances() == [] and not cache.stale
        events = cache.changes()
        async with registry.register(
            "what", "10.0.0.5", 8080, instance_id="a", payload={"zone": "eu"}, weight=2
        ) as registration:
            added = await next_event(events)
            assert added.kind == "added"
            seen = added.instance
            assert (seen.name, seen.id, seen.address, seen.port) == ("what", "a", "10.0.0.5", 8080)
            assert seen.payload == {"zone": "eu"} and seen.weight == 2 and seen.enabled
            assert seen.registered_at > 0
            stat = await zk.exists("/service/business/what/a")
            assert stat is not None and stat.ephemeral_owner == zk.session_id

            await registration.update(payload={"zone": "us"}, enabled=False)
            updated = await next_event(events)
            assert updated.kind == "updated" and updated.instance.payload == {"zone": "us"}
            assert not updated.instance.enabled
            with pytest.raises(NoInstances):
                cache.pick()
        removed = await next_event(events)
        assert removed.kind == "removed" and removed.instance.id == "a"
        assert cache.instances() == []
        assert await zk.exists("/service/business/what/a") is None


async def test_changes_end_with_the_discovery_block(zk: Client) -> None:
    registry = ServiceRegistry(zk)
    followed: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, registry.discovery("api") as cache:
            events = cache.changes()
            first = anyio.Event()

            async def follow() -> None:
                async for event in events:
                    followed.append(event.kind)
                    first.set()
                followed.append("ended")

            tg.start_soon(follow)
            async with registry.register("api", "10.0.0.1", 80, instance_id="a"):
                await first.wait()  # the follower is in the iteration: it waits for more
    assert followed[0] == "added" and followed[-1] == "ended"


async def test_pick_strategies_skip_disabled_instances(zk: Client) -> None:
    registry = ServiceRegistry(zk)
    async with (
        registry.register("api", "h1", 1, instance_id="i1", weight=1),
        registry.register("api", "h2", 2, instance_id="i2", weight=3),
        registry.register("api", "h3", 3, instance_id="i3", enabled=False),
        registry.discovery("api") as cache,
    ):
        await eventually(lambda: len(cache.instances()) == 3, 10)
        rr = [cache.pick("round_robin").id for _ in range(6)]
        assert rr in (["i1", "i2"] * 3, ["i2", "i1"] * 3)
        assert {cache.pick(Strategy.RANDOM).id for _ in range(200)} == {"i1", "i2"}
        weighted = Counter(cache.pick(Strategy.WEIGHTED).id for _ in range(4000))
        assert set(weighted) == {"i1", "i2"}
        assert 2.4 < weighted["i2"] / weighted["i1"] < 3.7  # weights 3 : 1


async def test_failing_health_check_deregisters_and_recovery_registers_once(zk: Client) -> None:
    port = free_port()

    async def serve_tcp(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async def handle(stream: anyio.abc.SocketStream) -> None:
            await stream.aclose()

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
        async with listener:
            task_status.started()
            await listener.serve(handle)

    registry = ServiceRegistry(zk)
    async with anyio.create_task_group() as tg, registry.discovery("web") as cache:
        server = anyio.CancelScope()

        async def run_server(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with server:
                await serve_tcp(task_status=task_status)

        await tg.start(run_server)
        events = cache.changes()
        async with registry.register(
            "web", "127.0.0.1", port, check=tcp_check("127.0.0.1", port),
            interval=0.1, fall=2, rise=2,
        ) as registration:  # fmt: skip
            assert (await next_event(events)).kind == "added"
            server.cancel()  # the real server stops: connections are refused
            assert (await next_event(events)).kind == "removed"
            assert not registration.registered and not registration.healthy

            server = anyio.CancelScope()
            await tg.start(run_server)
            assert (await next_event(events)).kind == "added"
            await anyio.sleep(0.5)  # a few more passing checks: no second registration
            assert registration.registrations == 2
            assert len(cache.instances()) == 1
        server.cancel()


async def test_registrant_session_expiry_registers_again(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with (
        Client(zk_server.hosts, namespace=namespace, session_timeout=4) as registrant,
        registrant.session_events() as feed,
        ServiceRegistry(registrant).register("db", "h", 5432, instance_id="db-1") as registration,
        ServiceRegistry(zk).discovery("db") as cache,
    ):
        old_owner = (await zk.exists("/services/db/db-1")).ephemeral_owner  # type: ignore[union-attr]
        await expire_session(registrant)
        await wait_state(feed, SessionState.LOST, 15)

        async def owner() -> int | None:
            stat = await zk.exists("/services/db/db-1")
            return stat.ephemeral_owner if stat else None

        async def registered_again() -> bool:
            return (await owner()) not in (None, old_owner)

        await eventually_async(registered_again, 15)
        assert await owner() == registrant.session_id
        assert registration.registrations == 2
        await eventually(lambda: ids(cache) == ["db-1"], 10)


async def test_discovery_through_a_cut_connection_converges(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    registry = ServiceRegistry(zk)
    # "goes" lives in a session of its own, closed while the reader is cut off
    other = Client(zk_server.hosts, namespace=namespace)
    await other.__aenter__()
    goes = ServiceInstance("q", "goes", "h", 2)
    await other.create("/services/q/goes", goes.encode(), ephemeral=True, makepath=True)
    async with registry.register("q", "h", 1, instance_id="stays"):
        with TcpProxy.to(zk_server.hosts) as proxy:
            async with (
                Client(proxy.address, namespace=namespace, session_timeout=10) as reader,
                reader.session_events() as feed,
                ServiceRegistry(reader).discovery("q") as cache,
            ):
                assert ids(cache) == ["goes", "stays"]
                proxy.refuse()
                proxy.cut()
                await wait_state(feed, SessionState.SUSPENDED, 10)
                assert cache.stale
                await other.aclose()
                async with registry.register("q", "h", 3, instance_id="new"):
                    proxy.accept()
                    await wait_state(feed, SessionState.RECONNECTED, 15)
                    await eventually(lambda: ids(cache) == ["new", "stays"], 10)
                    assert not cache.stale


async def test_kill_9_of_a_registered_process_leaves_every_cache(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    cmd = [
        sys.executable, "-m", "services", "register", "--zk", zk_server.hosts,
        "--namespace", zk.namespace, "--session-timeout", "2", "--service", "pay",
        "--address", "127.0.0.1", "--port", "9000", "--id", "pay-1",
    ]  # fmt: skip
    async with (
        ServiceRegistry(zk).discovery("pay") as cache,
        await anyio.open_process(cmd, stdout=None, stderr=None) as proc,
    ):
        try:
            await eventually(lambda: ids(cache) == ["pay-1"], 30)
            with anyio.fail_after(30):
                listed = await anyio.run_process(
                    [*cmd[:3], "discover", *cmd[4:10], "--service", "pay"]
                )
            (line,) = listed.stdout.decode().splitlines()
            assert codec.loads(line) | {"registered_at": 0} == {
                "name": "pay", "id": "pay-1", "address": "127.0.0.1", "port": 9000,
                "payload": None, "registered_at": 0, "enabled": True, "weight": 1.0,
            }  # fmt: skip
            proc.send_signal(signal.SIGKILL)
            started = anyio.current_time()
            await eventually(lambda: ids(cache) == [], 2 + 0.2 + 5)
            assert anyio.current_time() - started < zk.negotiated_timeout + 5
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_legacy_kazoo_registration_is_discovered(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    kazoo = KazooClient(hosts=zk_server.hosts + zk.namespace)
    kazoo.start(timeout=10)
    try:
        async with ServiceRegistry(zk, "/service/business").discovery("what") as cache:
            kazoo.create(
                "/service/business/what/s9099", b'["127.0.0.1", "9099"]',
                ephemeral=True, makepath=True,
            )  # fmt: skip
            await eventually(lambda: ids(cache) == ["s9099"], 10)
            instance = cache.pick()
            assert (instance.address, instance.port, instance.enabled) == ("127.0.0.1", 9099, True)
    finally:
        kazoo.stop()
        kazoo.close()


async def test_bad_input_is_refused_before_anything_is_sent(zk: Client) -> None:
    registry = ServiceRegistry(zk)
    with pytest.raises(InvalidInstance, match="no '/'"):
        async with registry.register("a/b", "h", 1):
            pass
    for port in (0, 65536, -1):
        with pytest.raises(InvalidInstance, match="out of range"):
            async with registry.register("svc", "h", port):
                pass
    with pytest.raises(PayloadTooLarge):
        async with registry.register("svc", "h", 1, payload="x" * (1024 * 1024)):
            pass
    with pytest.raises(InvalidInstance):
        async with registry.discovery("../etc"):
            pass
    for spec in ("tcp://nohost", "ftp://x", "cmd:", "http://"):
        with pytest.raises(ValueError, match="health check"):
            parse_check(spec)
    assert await zk.exists("/services") is None


async def test_http_and_command_checks_against_real_servers(tmp_path: Path) -> None:
    status = [b"200 OK"]

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.0 " + status[0] + b"\r\nContent-Length: 0\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        check = parse_check(f"http://127.0.0.1:{port}/health")
        with anyio.fail_after(10):
            assert await check() is True  # type: ignore[misc]
            status[0] = b"503 Service Unavailable"
            assert await check() is False  # type: ignore[misc]
        tg.cancel_scope.cancel()
    flag = tmp_path / "up"
    check = parse_check(f"cmd:test -e {flag}")
    with anyio.fail_after(10):
        assert await check() is False  # type: ignore[misc]
        flag.touch()
        assert await check() is True  # type: ignore[misc]


MALFORMED = {
    "port-text": b'["127.0.0.1", "http"]',
    "port-range": b'["127.0.0.1", 70000]',
    "port-zero": b'{"address": "127.0.0.1", "port": 0}',
    "port-float": b'{"address": "127.0.0.1", "port": 80.5}',
    "port-bool": b'{"address": "127.0.0.1", "port": true}',
    "no-address": b'{"port": 80}',
    "address-number": b"[7, 80]",
    "short-array": b'["127.0.0.1"]',
    "not-json": b"\xff\xfe garbage",
    "empty": b"",
}


async def test_malformed_instances_are_skipped_and_logged_never_fatal(
    zk_server: ZooKeeperServer, zk: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """One unreadable legacy or JSON node (a port that is no number, out of range, ...) is
    skipped with a warning by the cache, ``instances()`` and ``aiocoord discover``; the readable
    instances are served."""
    registry = ServiceRegistry(zk, "/service/business")
    base = "/service/business/what"
    await zk.create(f"{base}/good", b'["127.0.0.1", "9099"]', makepath=True)
    for name, data in MALFORMED.items():
        await zk.create(f"{base}/{name}", data)
    assert [i.id for i in await registry.instances("what")] == ["good"]
    async with registry.discovery("what") as cache:
        assert ids(cache) == ["good"]
        assert cache.pick().port == 9099
        # a readable instance that becomes unreadable is no longer handed out
        await zk.set(f"{base}/good", b'["127.0.0.1", "99999"]')
        await eventually(lambda: ids(cache) == [], 10)
    skipped = {r.getMessage() for r in caplog.records if "unreadable instance" in r.getMessage()}
    assert all(any(f"what/{name}" in m for m in skipped) for name in MALFORMED), skipped
    session = ["--zk", zk_server.hosts, "--namespace", zk.namespace]
    where = ["--base", "/service/business", "--service", "what"]
    cmd = [sys.executable, "-m", "services", "discover", *session, *where]
    await zk.set(f"{base}/good", b'["127.0.0.1", "9099"]')
    with anyio.fail_after(30):
        out = await anyio.run_process(cmd, check=False)
    assert out.returncode == 0, out.stderr.decode()
    assert b"9099" in out.stdout and b"Traceback" not in out.stderr
