"""Task dispatch in one process against a real ZooKeeper: the whole round trip, assignment by
free capacity, retries then dead, cancellation, a kazoo script as client, fencing of a deposed
dispatcher, a worker's expired session, graceful stop, retention, bad input. The process-level
faults (kill -9, SIGSTOP) are in tests/services/test_tasks_services.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.abc
import pytest
from kazoo.client import KazooClient

from aiocoord import (
    Client,
    Dispatcher,
    MultiFailed,
    Op,
    PayloadTooLarge,
    SessionState,
    Task,
    TaskCancelled,
    TaskFailed,
    TaskHandle,
    TaskQueue,
    TaskState,
    UnknownTask,
    Worker,
)
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from tests.helpers import eventually, eventually_async

Handler = Callable[[Task], Awaitable[bytes]]


async def echo(task: Task) -> bytes:
    return task.payload


@asynccontextmanager
async def session(zk_server: ZooKeeperServer, zk: Client) -> AsyncIterator[Client]:
    async with Client(zk_server.hosts, namespace=zk.namespace, session_timeout=2) as client:
        yield client


@asynccontextmanager
async def system(
    zk_server: ZooKeeperServer,
    zk: Client,
    workers: dict[str, tuple[Handler, int]],
    **dispatcher_options: object,
) -> AsyncIterator[tuple[Dispatcher, dict[str, Worker]]]:
    """A dispatcher and workers, each on its own session (as separate processes would be)."""
    async with AsyncExitStack() as stack:
        dz = await stack.enter_async_context(session(zk_server, zk))
        clients = [await stack.enter_async_context(session(zk_server, zk)) for _ in workers]
        tg = await stack.enter_async_context(anyio.create_task_group())
        dispatcher = Dispatcher(dz, identity="d1", **dispatcher_options)  # type: ignore[arg-type]
        tg.start_soon(dispatcher.run)
        with anyio.fail_after(10):
            await dispatcher.wait_active()
        running: dict[str, Worker] = {}
        for client, (name, (handler, concurrency)) in zip(clients, workers.items(), strict=True):
            worker = Worker(client, handler, worker_id=name, concurrency=concurrency, grace=5)
            await tg.start(worker.run)
            running[name] = worker
        try:
            yield dispatcher, running
        finally:
            tg.cancel_scope.cancel()


async def test_tasks_complete_with_results_and_counts(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async with system(zk_server, zk, {"w1": (echo, 4), "w2": (echo, 4)}) as (dispatcher, workers):
        queue = TaskQueue(zk)
        handles = [await queue.submit(f"job {i}".encode()) for i in range(50)]
        with anyio.fail_after(20):
            results = [await h.result() for h in handles]
        assert results == [f"job {i}".encode() for i in range(50)]
        assert await handles[0].status() is TaskState.DONE
        counts = await queue.counts()
        assert counts[TaskState.DONE] == 50 and sum(counts.values()) == 50
        assert sum(w.counts["completed"] for w in workers.values()) == 50
        assert dispatcher.counts["assigned"] == 50
        # the kazoo-compatible layout: status "done", result beside it
        assert (await zk.get(f"/rpc/tasks/{handles[0].id}/status"))[0] == b"done"
        assert (await zk.get(f"/rpc/tasks/{handles[0].id}/result"))[0] == b"job 0"


async def test_assignment_follows_free_capacity(zk_server: ZooKeeperServer, zk: Client) -> None:
    release = anyio.Event()
    seen: Counter[str] = Counter()

    async def hold(task: Task) -> bytes:
        seen[task.worker] += 1
        await release.wait()
        return b"ok"

    async with system(zk_server, zk, {"big": (hold, 6), "small": (hold, 2)}):
        queue = TaskQueue(zk)
        handles = [await queue.submit(b"x") for _ in range(8)]
        # 8 tasks, capacity 6 + 2: each worker holds exactly as many as it can run
        await eventually(lambda: sum(seen.values()) == 8, timeout=10)
        assert seen == {"big": 6, "small": 2}
        assert len(await zk.children("/rpc/assign/big")) == 6
        more = await queue.submit(b"y")  # no free capacity anywhere: it waits, pending
        await anyio.sleep(0.3)
        assert await more.status() is TaskState.PENDING
        release.set()
        with anyio.fail_after(10):
            for h in [*handles, more]:
                assert await h.result() == b"ok"


async def test_failing_task_is_retried_then_dead_while_others_complete(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    runs: Counter[bytes] = Counter()

    async def flaky(task: Task) -> bytes:
        runs[task.payload] += 1
        if task.payload == b"poison":
            raise RuntimeError(f"cannot handle it (run {runs[task.payload]})")
        if task.payload == b"twice" and runs[task.payload] < 3:
            raise ValueError("not yet")
        return task.payload.upper()

    async with system(zk_server, zk, {"w1": (flaky, 2)}, max_attempts=3) as (dispatcher, _):
        queue = TaskQueue(zk)
        poison = await queue.submit(b"poison")
        twice = await queue.submit(b"twice")
        fine = [await queue.submit(b"fine") for _ in range(10)]
        with anyio.fail_after(20):
            with pytest.raises(TaskFailed) as failed:
                await poison.result()
            assert await twice.result() == b"TWICE"  # failed twice, third attempt succeeded
            for h in fine:
                assert await h.result() == b"FINE"
        assert failed.value.attempts == 3
        assert "RuntimeError: cannot handle it (run 3)" in failed.value.error
        assert runs[b"poison"] == 3
        assert await poison.status() is TaskState.DEAD
        assert dispatcher.counts["dead"] == 1 and dispatcher.counts["retried"] == 4


async def test_cancel_pending_and_running_tasks(zk_server: ZooKeeperServer, zk: Client) -> None:
    started = anyio.Event()
    cancelled = anyio.Event()

    async def slow(task: Task) -> bytes:
        started.set()
        try:
            await anyio.sleep(60)
        finally:
            cancelled.set()
        return b"late"

    async with system(zk_server, zk, {"w1": (slow, 1)}) as (_, workers):
        queue = TaskQueue(zk)
        running = await queue.submit(b"a")
        with anyio.fail_after(10):
            await started.wait()
        waiting = await queue.submit(b"b")  # the only slot is taken: stays pending
        assert await waiting.cancel() is True
        assert await running.cancel() is True
        with anyio.fail_after(10):
            await cancelled.wait()  # the worker stopped running it
            with pytest.raises(TaskCancelled):
                await running.result()
            with pytest.raises(TaskCancelled):
                await waiting.result()
        assert await running.status() is TaskState.CANCELLED
        assert await running.cancel() is False  # already finished
        assert workers["w1"].counts["completed"] == 0
        after = await queue.submit(b"c")  # the slot is free again
        await eventually(lambda: workers["w1"].running == {after.id}, timeout=10)


async def test_tasks_cancelled_while_queued_do_not_hold_up_the_others(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """With no worker yet, 30 tasks queue up; 5 are cancelled. The first batch of moves meets
    the cancelled ones (its multi() is refused as a whole): the others still all run."""
    async with system(zk_server, zk, {}) as (dispatcher, _):
        queue = TaskQueue(zk)
        handles = [await queue.submit(str(i).encode()) for i in range(30)]
        cancelled = handles[3:30:6]
        for handle in cancelled:
            assert await handle.cancel() is True
        async with session(zk_server, zk) as wz, anyio.create_task_group() as tg:
            await tg.start(Worker(wz, echo, worker_id="late", concurrency=64).run)
            with anyio.fail_after(15):
                for handle in handles:
                    if handle in cancelled:
                        with pytest.raises(TaskCancelled):
                            await handle.result()
                    else:
                        assert await handle.result() == handle_payload(handles, handle)
            assert dispatcher.counts["assigned"] == 25
            tg.cancel_scope.cancel()


def handle_payload(handles: list[TaskHandle], handle: TaskHandle) -> bytes:
    return str(handles.index(handle)).encode()


async def test_a_plain_kazoo_script_gets_its_task_done(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async with system(zk_server, zk, {"w1": (echo, 2)}):
        kazoo = KazooClient(hosts=zk_server.hosts + zk.namespace)
        kazoo.start(timeout=10)
        try:

            def script() -> bytes:
                # what the old client scripts do, unchanged
                path = kazoo.create("/rpc/tasks/task-", b"cmd", sequence=True)
                while True:
                    if kazoo.exists(path + "/status"):
                        data, _ = kazoo.get(path + "/status")
                        if data == b"done":
                            return kazoo.get(path + "/result")[0]  # type: ignore[no-any-return]
                    import time

                    time.sleep(0.05)

            with anyio.fail_after(15):
                result = await anyio.to_thread.run_sync(script, abandon_on_cancel=True)
            assert result == b"cmd"
        finally:
            kazoo.stop()
            kazoo.close()


async def test_deposed_dispatcher_cannot_assign(zk_server: ZooKeeperServer, zk: Client) -> None:
    async with session(zk_server, zk) as dz:
        dispatcher = Dispatcher(dz, identity="old")
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.run)
            with anyio.fail_after(10):
                await dispatcher.wait_active()
            guard = list(dispatcher._guard)
            tg.cancel_scope.cancel()
    # a new dispatcher takes over: the epoch moved on
    async with session(zk_server, zk) as other, session(zk_server, zk) as old:
        successor = Dispatcher(other, identity="new")
        async with anyio.create_task_group() as tg:
            tg.start_soon(successor.run)
            with anyio.fail_after(10):
                await successor.wait_active()
            await old.create("/rpc/assign/w9")
            task = await TaskQueue(old).submit(b"x")
            # the old term's guarded write, replayed: refused, nothing written
            with pytest.raises(MultiFailed) as refused:
                await old.multi(
                    [
                        *guard,
                        Op.create(f"/rpc/tasks/{task.id}/status", b"schedule"),
                        Op.create(f"/rpc/assign/w9/{task.id}"),
                    ]
                )
            assert refused.value.index in (0, 1)
            assert await old.exists(f"/rpc/assign/w9/{task.id}") is None
            tg.cancel_scope.cancel()


async def test_standby_takes_over_and_nothing_is_lost(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async with (
        system(zk_server, zk, {"w1": (echo, 4)}) as (first, _),
        session(zk_server, zk) as sz,
        anyio.create_task_group() as tg,
    ):
        standby = Dispatcher(sz, identity="d2")
        tg.start_soon(standby.run)
        queue = TaskQueue(zk)
        handles = [await queue.submit(str(i).encode()) for i in range(20)]
        await expire_session(first._client)  # the active one's session ends on the server
        with anyio.fail_after(10):
            await standby.wait_active()
        handles += [await queue.submit(str(i).encode()) for i in range(20, 40)]
        with anyio.fail_after(20):
            assert [await h.result() for h in handles] == [str(i).encode() for i in range(40)]
        assert (await zk.get("/rpc/master"))[0] in (b"d1", b"d2")
        tg.cancel_scope.cancel()


async def test_cut_off_worker_cannot_complete_a_moved_task(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """w1 is cut off past its session timeout (as if paused): its task moves to w2; when w1 is
    back and its handler returns, its completion is refused (or its run stopped)."""
    gate = anyio.Event()
    ran: list[str] = []

    async def blocked(task: Task) -> bytes:
        ran.append(task.worker)
        if task.worker == "w1":
            with anyio.CancelScope(shield=True):
                await gate.wait()
        return task.worker.encode()

    async with system(zk_server, zk, {}) as (dispatcher, _):
        with TcpProxy.to(zk_server.hosts) as proxy:
            async with (
                Client(proxy.address, namespace=zk.namespace, session_timeout=2) as w1z,
                session(zk_server, zk) as w2z,
                anyio.create_task_group() as tg,
            ):
                w1 = Worker(w1z, blocked, worker_id="w1", concurrency=1)
                await tg.start(w1.run)
                handle = await TaskQueue(zk).submit(b"t")
                await eventually(lambda: ran == ["w1"], timeout=10)
                proxy.refuse()
                proxy.cut()
                w2 = Worker(w2z, blocked, worker_id="w2", concurrency=1)
                await tg.start(w2.run)
                with anyio.fail_after(15):
                    assert await handle.result() == b"w2"
                proxy.accept()
                await eventually(lambda: w1z.state is SessionState.CONNECTED, timeout=15)
                gate.set()
                await eventually(lambda: not w1.running, timeout=10)
                assert w1.counts["completed"] == 0 and w2.counts["completed"] == 1
                assert (await zk.get(f"/rpc/tasks/{handle.id}/result"))[0] == b"w2"
                assert await handle.status() is TaskState.DONE
                errors = [n for n in await zk.children(handle.path) if n.startswith("error-")]
                assert len(errors) == 1  # the loss counted as one failed attempt
                assert dispatcher.counts["reassigned"] == 1
                tg.cancel_scope.cancel()


async def test_graceful_stop_finishes_or_returns_tasks(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async def sleepy(task: Task) -> bytes:
        await anyio.sleep(float(task.payload))
        return task.payload

    async with (
        session(zk_server, zk) as dz,
        session(zk_server, zk) as wz,
        anyio.create_task_group() as tg,
    ):
        dispatcher = Dispatcher(dz)
        tg.start_soon(dispatcher.run)
        worker = Worker(wz, sleepy, worker_id="w1", concurrency=2, grace=1.0)
        await tg.start(worker.run)
        queue = TaskQueue(zk)
        quick = await queue.submit(b"0.2")
        slow = await queue.submit(b"30")
        await eventually(lambda: len(worker.running) == 2, timeout=10)
        worker.stop()
        await eventually(lambda: worker._drained.is_set(), timeout=10)
        assert await quick.status() is TaskState.DONE  # finished within the grace period
        assert await slow.status() is TaskState.PENDING  # returned to the queue
        assert worker.counts == {"completed": 1, "failed": 0, "refused": 0, "returned": 1}
        assert await zk.exists("/rpc/workers/w1") is None
        tg.cancel_scope.cancel()


async def test_finished_tasks_are_cleaned_up_after_retention(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async with system(zk_server, zk, {"w1": (echo, 2)}, retention=0.5) as (dispatcher, _):
        handle = await TaskQueue(zk).submit(b"x")
        with anyio.fail_after(10):
            assert await handle.result() == b"x"

        async def gone() -> bool:
            return await zk.exists(handle.path) is None

        await eventually_async(gone, timeout=10)
        with pytest.raises(UnknownTask):
            await handle.status()
        assert dispatcher.counts["cleaned"] == 1


async def test_bad_input_is_refused_before_it_is_sent(zk: Client) -> None:
    queue = TaskQueue(zk)
    with pytest.raises(PayloadTooLarge):
        await queue.submit(b"x" * (1024 * 1024 + 1))
    assert await zk.children("/rpc/tasks") == []  # nothing was queued
    with pytest.raises(ValueError, match="bad task id"):
        queue.handle("../master")
    unknown = queue.handle("task-0000009999")
    with pytest.raises(UnknownTask):
        await unknown.status()
    with pytest.raises(UnknownTask), anyio.fail_after(5):
        await unknown.result()
    with pytest.raises(UnknownTask):
        await unknown.cancel()
    with pytest.raises(TypeError):
        await queue.submit("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="worker id"):
        Worker(zk, echo, worker_id="a/b")
    with pytest.raises(ValueError, match="max_attempts"):
        Dispatcher(zk, max_attempts=0)
