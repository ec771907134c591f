"""The host status the long-running services keep (``services/common.py: StatusReporter``): a
status write lost in a blip is written again once the session is back, not only on a new session
(else ``--wait-applied`` waits for a host that applied the version long ago)."""

from __future__ import annotations

import anyio

from aiocoord import Client, StatusBoard
from aiocoord.testing import TcpProxy, ZooKeeperServer
from services.common import StatusReporter
from tests.helpers import eventually, eventually_async

BOARD = "/app-status"


async def test_a_status_write_lost_in_a_blip_is_written_once_the_session_is_back(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=10) as host:
            reporter = StatusReporter(host, StatusBoard(host, BOARD), "web1")
            session = host.session_id
            async with anyio.create_task_group() as tg:
                tg.start_soon(reporter.keep)
                with anyio.fail_after(10):
                    await reporter.report("conf-0000000001", True)
                proxy.stall()  # the next write is held by the proxy...
                async with anyio.create_task_group() as writes:
                    writes.start_soon(reporter.report, "conf-0000000002", True)
                    await eventually(lambda: proxy.held_requests > 0, 5)
                    proxy.cut()  # ...and dropped with the connection: never applied
                    proxy.resume()

                async def reported() -> bool:
                    (status,) = await StatusBoard(zk, BOARD).read()
                    return status.version == "conf-0000000002"

                await eventually_async(reported, 10)
                assert host.session_id == session  # the same session: a blip, not a loss
                tg.cancel_scope.cancel()
