"""Task dispatch through faults placed at one exact request: a worker whose payload read is
unanswered when its session expires, and the deletes a stopping worker and a resigning dispatcher
owe when their request is lost in a blip (``Client.delete_ephemeral``: sent again after the
reconnect, not left until the session ends)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio

from aiocoord import Client, Dispatcher, Task, TaskQueue, Worker
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from aiocoord.transport.requests import Delete, GetData, Request
from tests.helpers import eventually, eventually_async, gone


async def echo(task: Task) -> bytes:
    return task.payload


@contextmanager
def before_sending(
    client: Client, request: type[Request[object]], path: str, fault: Callable[[], None]
) -> Iterator[anyio.Event]:
    """Call ``fault`` (e.g. ``proxy.stall``) just before ``client`` sends its first ``request``
    on a path that ``path`` (a regular expression) matches, so that the fault meets exactly that
    request; the event is set once it did."""
    session = client._session
    submit = session.submit
    met = anyio.Event()

    def hooked(req: Request[object]) -> object:
        if not met.is_set() and isinstance(req, request) and re.fullmatch(path, req.path):
            fault()
            met.set()
        return submit(req)

    session.submit = hooked  # type: ignore[method-assign, assignment]
    try:
        yield met
    finally:
        del session.submit


@asynccontextmanager
async def proxied(
    zk_server: ZooKeeperServer, zk: Client, session_timeout: float
) -> AsyncIterator[tuple[TcpProxy, Client]]:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(
            proxy.address, namespace=zk.namespace, session_timeout=session_timeout
        ) as client:
            yield proxy, client


async def cut_when_held(proxy: TcpProxy, met: anyio.Event) -> None:
    """The request the fault met is held at the proxy: cut (it never reaches the server, or its
    reply never comes back), then forward again."""
    with anyio.fail_after(10):
        await met.wait()
    await eventually(lambda: proxy.held_requests + proxy.held_replies > 0, timeout=10)
    proxy.cut()
    proxy.resume()


async def test_a_payload_read_unanswered_when_the_session_expires_is_retried_on_the_next(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """The worker's read of a task's payload reaches the server, its reply is held; the session
    expires on the server meanwhile; the cut loses the reply (ConnectionLoss). The worker does
    not give up: it registers on its new session and runs the task moved to it."""
    async with (
        proxied(zk_server, zk, session_timeout=10) as (proxy, wz),
        anyio.create_task_group() as tg,
    ):
        dispatcher = Dispatcher(zk, identity="d1")
        tg.start_soon(dispatcher.run)
        worker = Worker(wz, echo, worker_id="w1", concurrency=1)
        with anyio.fail_after(10):
            await dispatcher.wait_active()
            await tg.start(worker.run)
        session = wz.session_id
        with before_sending(wz, GetData, r"/rpc/tasks/task-\d{10}", proxy.stall_replies) as read:
            handle = await TaskQueue(zk).submit(b"payload")
            with anyio.fail_after(10):
                await read.wait()
            await eventually(lambda: proxy.held_replies > 0, timeout=10)
            await expire_session(wz, host=zk_server.hosts)
            proxy.cut()
            proxy.resume()
        with anyio.fail_after(20):
            assert await handle.result() == b"payload"
        assert wz.session_id not in (0, session)
        assert worker.counts["completed"] == 1
        tg.cancel_scope.cancel()


async def test_a_dispatcher_resign_lost_in_a_blip_is_done_after_the_reconnect(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async with proxied(zk_server, zk, session_timeout=20) as (proxy, dz):
        dispatcher = Dispatcher(dz, identity="d1")
        session = dz.session_id
        with (
            before_sending(dz, Delete, "/rpc/master", proxy.stall) as resign,
            anyio.fail_after(30),
        ):
            async with anyio.create_task_group() as tg:
                running = anyio.CancelScope()

                async def dispatch() -> None:
                    with running:
                        await dispatcher.run()

                tg.start_soon(dispatch)
                await dispatcher.wait_active()
                running.cancel()  # resigns at once: its delete is held, then lost
                await cut_when_held(proxy, resign)
        await eventually_async(gone(zk, "/rpc/master"), timeout=10)
        assert dz.session_id == session  # not with the session: the owed delete did it


async def test_a_worker_deregistration_lost_in_a_blip_is_done_after_the_reconnect(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async with proxied(zk_server, zk, session_timeout=20) as (proxy, wz):
        worker = Worker(wz, echo, worker_id="w1", concurrency=1, grace=1)
        session = wz.session_id
        with (
            before_sending(wz, Delete, "/rpc/workers/w1", proxy.stall) as deregister,
            anyio.fail_after(30),
        ):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                worker.stop()
                await cut_when_held(proxy, deregister)
        await eventually_async(gone(zk, "/rpc/workers/w1"), timeout=10)
        assert wz.session_id == session
