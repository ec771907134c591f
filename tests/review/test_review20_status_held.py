"""Review 20, attacks on ``StatusReporter`` that held: the status node ends on the last reported
status, owned by the current session, through a lost session with a write in flight, a report
racing the new session, and two quick reports while the link is stalled."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from aiocoord import Client, SessionState, StatusBoard
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from services.common import StatusReporter
from tests.helpers import eventually, eventually_async, wait_state

BOARD = "/app-status"
V1, V2, V3 = "conf-0000000001", "conf-0000000002", "conf-0000000003"


async def _status(zk: Client) -> tuple[str | None, int | None]:
    """(version, owner session) of the host's status node."""
    statuses = await StatusBoard(zk, BOARD).read()
    if not statuses:
        return None, None
    stat = await zk.exists(f"{BOARD}/web1")
    return statuses[0].version, (stat.ephemeral_owner if stat else None)


async def test_expiry_with_a_write_in_flight_then_a_report_racing_the_new_session(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=10) as host:
            reporter = StatusReporter(host, StatusBoard(host, BOARD), "web1")
            first = host.session_id
            armed = False
            original_set = host.set

            async def set_reply_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
                if armed:
                    proxy.stall_replies()
                return await original_set(*args, **kwargs)

            host.set = set_reply_lost  # type: ignore[method-assign]
            async with host.session_events() as feed, anyio.create_task_group() as tg:
                tg.start_soon(reporter.keep)
                with anyio.fail_after(10):
                    await reporter.report(V1, True)
                armed = True
                async with anyio.create_task_group() as writes:
                    writes.start_soon(reporter.report, V2, True)

                    async def applied() -> bool:
                        return (await _status(zk))[0] == V2

                    await eventually_async(applied, 10)
                    await eventually(lambda: proxy.held_replies > 0, 5)
                    armed = False
                    await expire_session(host, host=zk_server.hosts)
                    proxy.cut()
                    proxy.resume()
                    # a report racing the new session: made while LOST or just CONNECTED
                    writes.start_soon(reporter.report, V3, True)
                await wait_state(feed, SessionState.CONNECTED, 15)

                async def last_on_current() -> bool:
                    version, owner = await _status(zk)
                    return version == V3 and owner == host.session_id

                await eventually_async(last_on_current, 15)
                assert host.session_id != first
                tg.cancel_scope.cancel()


async def test_two_quick_reports_in_a_stall_the_last_one_is_written(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=10) as host:
            reporter = StatusReporter(host, StatusBoard(host, BOARD), "web1")
            async with anyio.create_task_group() as tg:
                tg.start_soon(reporter.keep)
                with anyio.fail_after(10):
                    await reporter.report(V1, True)
                proxy.stall()
                async with anyio.create_task_group() as writes:
                    writes.start_soon(reporter.report, V2, True)
                    await eventually(lambda: proxy.held_requests > 0, 5)
                    writes.start_soon(reporter.report, V1, False, "boom")
                    await anyio.lowlevel.checkpoint()
                    proxy.cut()  # the first's write dropped, never applied
                    proxy.resume()

                with anyio.fail_after(15):
                    while True:
                        statuses = await StatusBoard(zk, BOARD).read()
                        if statuses and statuses[0].version == V1 and statuses[0].error == "boom":
                            break
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
