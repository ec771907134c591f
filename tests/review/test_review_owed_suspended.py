"""Review: owed deletes when the resign / deregistration starts while the session is SUSPENDED
(the connection is already down, the session lives on and comes back with RECONNECTED)."""

from __future__ import annotations

import anyio

from aiocoord import Client, Dispatcher, ServiceRegistry, SessionState, Task, Worker
from aiocoord.testing import TcpProxy, ZooKeeperServer
from tests.helpers import eventually, eventually_async, gone
from tests.transport.test_owed_deletes import exists


async def echo(task: Task) -> bytes:
    return task.payload


async def test_a_dispatcher_cancelled_while_suspended_resigns_after_the_reconnect(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """The active dispatcher is cancelled while its connection is down (SUSPENDED, session
    alive). After the reconnect on the same session, the standby must take over: a blip must
    never leave the standbys waiting for a master that resigned."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=30) as dz:
            states: list[SessionState] = []
            dz.add_listener(lambda e: states.append(e.state))
            d1 = Dispatcher(dz, identity="d1")
            d2 = Dispatcher(zk, identity="d2")
            session = dz.session_id
            async with anyio.create_task_group() as tg:
                running = anyio.CancelScope()
                ended = anyio.Event()

                async def dispatch() -> None:
                    with running:
                        await d1.run()
                    ended.set()

                tg.start_soon(dispatch)
                with anyio.fail_after(10):
                    await d1.wait_active()
                tg.start_soon(d2.run)
                proxy.refuse()
                proxy.cut()
                await eventually(lambda: SessionState.SUSPENDED in states, timeout=10)
                running.cancel()  # resigns while suspended
                with anyio.fail_after(10):
                    await ended.wait()
                proxy.accept()
                await eventually(lambda: SessionState.RECONNECTED in states, timeout=15)
                assert dz.session_id == session
                with anyio.fail_after(10):  # well within the 30 s session timeout
                    await d2.wait_active()
                tg.cancel_scope.cancel()


async def test_a_worker_stopped_while_suspended_deregisters_after_the_reconnect(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """A worker stopped while its connection is down (SUSPENDED, session alive) must not stay
    registered (taking assignments it will never run) once the session reconnects."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=30) as wz:
            states: list[SessionState] = []
            wz.add_listener(lambda e: states.append(e.state))
            worker = Worker(wz, echo, worker_id="w1", concurrency=1, grace=0.5)
            session = wz.session_id
            async with anyio.create_task_group() as tg:
                done = anyio.Event()

                async def work() -> None:
                    await worker.run()
                    done.set()

                tg.start_soon(work)
                await eventually_async(lambda: exists(zk, "/rpc/workers/w1"), timeout=10)
                proxy.refuse()
                proxy.cut()
                await eventually(lambda: SessionState.SUSPENDED in states, timeout=10)
                worker.stop()
                with anyio.fail_after(30):
                    await done.wait()
                proxy.accept()
                await eventually(lambda: SessionState.RECONNECTED in states, timeout=15)
                assert wz.session_id == session
                # well within the 30 s session timeout
                await eventually_async(gone(zk, "/rpc/workers/w1"), timeout=10)
                tg.cancel_scope.cancel()


async def test_a_registration_ended_while_suspended_is_deleted_after_the_reconnect(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """A registration left while disconnected (SUSPENDED, session alive) does not wait for the
    reconnect: its delete is owed at once, and done after the reconnect."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=zk.namespace, session_timeout=30) as rz:
            states: list[SessionState] = []
            rz.add_listener(lambda e: states.append(e.state))
            registry = ServiceRegistry(rz, "/services")
            with anyio.fail_after(10):  # well within the 30 s session timeout
                async with registry.register("api", "127.0.0.1", 80, instance_id="i1"):
                    assert await zk.exists("/services/api/i1") is not None
                    proxy.refuse()
                    proxy.cut()
                    await eventually(lambda: SessionState.SUSPENDED in states, timeout=5)
            # left while disconnected: the delete is owed, not waited for
            assert rz.state is SessionState.SUSPENDED
            assert await zk.exists("/services/api/i1") is not None
            proxy.accept()
            await eventually(lambda: SessionState.RECONNECTED in states, timeout=15)
            await eventually_async(gone(zk, "/services/api/i1"), timeout=10)
