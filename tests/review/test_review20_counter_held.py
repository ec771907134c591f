"""Review 20, held: ``Counter.add`` never counts an increment twice when its reply is lost (the
write applied, its reply cut: ``CounterOutcomeUnknown``, the counter +1) nor loses one whose
request was dropped (not applied: made again, +1)."""

from __future__ import annotations

import anyio

from aiocoord import Client, Counter, CounterOutcomeUnknown
from aiocoord.testing import TcpProxy, ZooKeeperServer
from tests.helpers import eventually, eventually_async


async def test_reply_lost_after_apply_is_unknown_and_counted_once(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=10) as host:
            counter = Counter(host, "/c")
            await counter.add(1)
            original_set = host.set
            armed = True

            async def set_reply_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
                if armed:
                    proxy.stall_replies()
                return await original_set(*args, **kwargs)

            host.set = set_reply_lost  # type: ignore[method-assign]
            outcome: list[object] = []

            async def add() -> None:
                try:
                    outcome.append(await counter.add(1))
                except CounterOutcomeUnknown as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(add)

                async def applied() -> bool:
                    return (await Counter(zk, "/c").value()) == 2

                await eventually_async(applied, 10)
                await eventually(lambda: proxy.held_replies > 0, 5)
                armed = False
                proxy.cut()
                proxy.resume()
            assert isinstance(outcome[0], CounterOutcomeUnknown), outcome
            assert await Counter(zk, "/c").value() == 2


async def test_request_dropped_is_made_again_once(zk_server: ZooKeeperServer, zk: Client) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=10) as host:
            counter = Counter(host, "/c")
            await counter.add(1)
            original_set = host.set
            armed = True

            async def set_dropped(*args, **kwargs):  # type: ignore[no-untyped-def]
                if armed:
                    proxy.stall()
                return await original_set(*args, **kwargs)

            host.set = set_dropped  # type: ignore[method-assign]
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    result: list[object] = []

                    async def add() -> None:
                        result.append(await counter.add(1))

                    tg.start_soon(add)
                    await eventually(lambda: proxy.held_requests > 0, 5)
                    armed = False
                    proxy.cut()
                    proxy.resume()
            assert result[0].post_value == 2  # type: ignore[attr-defined]
            assert await Counter(zk, "/c").value() == 2
