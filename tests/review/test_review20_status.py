"""Review 20: attacks on ``services/common.py: StatusReporter`` ("a status write lost in a blip is
written again once the session is back; writes serialized, the last reported is the last
written"): the status node at ``<board>/<host>`` must end on the LAST reported status.

Finding: ``_write`` skips a status equal to ``_written`` (the last write it *knows* succeeded),
but a write that failed with ``ConnectionLoss`` may have been applied: ``_written`` is left on the
status before it, so reporting that earlier status again (a rollback, a version that failed and
the previous one back in place) is skipped as "already written" while the node holds the failed
write's status, and the RECONNECTED rewrite skips it too. The node stays on a status that is not
the last reported, for as long as the session lives.
"""

from __future__ import annotations

import anyio

from aiocoord import Client, SessionState, StatusBoard
from aiocoord.testing import TcpProxy, ZooKeeperServer
from services.common import StatusReporter
from tests.helpers import eventually, eventually_async, wait_state

BOARD = "/app-status"
V1, V2 = "conf-0000000001", "conf-0000000002"


async def _version(zk: Client) -> str | None:
    statuses = await StatusBoard(zk, BOARD).read()
    return statuses[0].version if statuses else None


async def test_reporting_again_the_status_before_a_write_lost_but_applied_is_written(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=10) as host:
            reporter = StatusReporter(host, StatusBoard(host, BOARD), "web1")
            session = host.session_id
            armed = False
            original_set = host.set

            async def set_reply_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
                if armed:  # the overwrite reaches the server, its reply never comes back
                    proxy.stall_replies()
                return await original_set(*args, **kwargs)

            host.set = set_reply_lost  # type: ignore[method-assign]
            async with host.session_events() as feed, anyio.create_task_group() as tg:
                tg.start_soon(reporter.keep)
                with anyio.fail_after(10):
                    await reporter.report(V1, True)
                assert await _version(zk) == V1
                armed = True
                async with anyio.create_task_group() as writes:
                    writes.start_soon(reporter.report, V2, False, "v2 failed to apply")

                    async def applied() -> bool:
                        return await _version(zk) == V2

                    await eventually_async(applied, 10)  # applied on the server...
                    await eventually(lambda: proxy.held_replies > 0, 5)
                    armed = False
                    proxy.cut()  # ...its reply lost with the connection: ConnectionLoss
                    proxy.resume()
                await wait_state(feed, SessionState.RECONNECTED, 10)
                assert host.session_id == session  # a blip, not a new session
                # the host reports V1 (in place again, fine): the last reported status
                with anyio.fail_after(10):
                    await reporter.report(V1, True)

                async def last_reported() -> bool:
                    return await _version(zk) == V1

                # the node must end on the last reported status (it stays on V2's failure)
                await eventually_async(last_reported, 10)
                tg.cancel_scope.cancel()
