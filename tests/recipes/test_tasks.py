"""Task dispatch in one process against a real ZooKeeper: the whole round trip, assignment by
free capacity, retries then dead, cancellation, a kazoo script as client, fencing of a deposed
dispatcher, a worker's expired session, graceful stop, retention, bad input. The process-level
faults (kill -9, SIGSTOP) are in tests/services/test_tasks_services.py."""

from __future__ import annotations

import threading
import time
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
from aiocoord.recipes.tasks import _retry_delay
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from aiocoord.transport import codec
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

    async with system(zk_server, zk, {"big": (hold, 6), "small": (hold, 2)}) as (dispatcher, _):
        queue = TaskQueue(zk)
        handles = [await queue.submit(b"x") for _ in range(8)]
        # 8 tasks, capacity 6 + 2: each worker holds exactly as many as it can run
        await eventually(lambda: sum(seen.values()) == 8, timeout=10)
        assert seen == {"big": 6, "small": 2}
        assert len(await zk.children("/rpc/assign/big")) == 6
        more = await queue.submit(b"y")  # no free capacity anywhere: it waits, pending
        await eventually(lambda: dispatcher.queue_sizes()["pending"] == 1, timeout=10)
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
        assert (await zk.get("/rpc/master"))[0] == b"d2"
        assert standby.active
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


# -- issue 13: fencing, session loss, departed workers, refused completions, retries ---------
async def assigned(zk: Client, worker: str, task: str) -> bool:
    return await zk.exists(f"/rpc/assign/{worker}/{task}") is not None


@pytest.mark.parametrize("then", ["the replacement leaves", "the stale worker stops"])
async def test_stale_worker_cannot_complete_a_task_moved_to_a_replacement_of_its_id(
    zk_server: ZooKeeperServer, zk: Client, then: str
) -> None:
    """The stale worker is cut off past its session timeout while its handler runs (a handler
    that does not stop when cancelled, as a thread would not); a replacement of the same id
    (StatefulSet pod) takes the task at the same assignment path. Released before the
    replacement finishes, the stale worker's completion is refused (the move bumped the status
    version its completion is fenced on): the result is the replacement's. Then either the
    replacement leaves and the stale worker registers again and works, or the stale worker is
    stopped while the replacement holds the id: it stops at once and leaves it all alone."""
    gates = {"stale": anyio.Event(), "new": anyio.Event()}
    runs: dict[str, list[str]] = {"stale": [], "new": []}

    def handler(name: str) -> Handler:
        async def run(task: Task) -> bytes:
            runs[name].append(task.id)
            if len(runs[name]) == 1:
                with anyio.CancelScope(shield=True):
                    await gates[name].wait()
            return name.encode()

        return run

    async with system(zk_server, zk, {}, max_attempts=5):
        with TcpProxy.to(zk_server.hosts) as proxy:
            async with (
                Client(proxy.address, namespace=zk.namespace, session_timeout=2) as sz,
                session(zk_server, zk) as nz,
                anyio.create_task_group() as tg,
            ):
                try:
                    stale = Worker(sz, handler("stale"), worker_id="w", concurrency=1, grace=2)
                    await tg.start(stale.run)
                    handle = await TaskQueue(zk).submit(b"t")
                    await eventually(lambda: runs["stale"] == [handle.id], timeout=10)
                    proxy.refuse()
                    proxy.cut()  # its session expires on the server
                    new = Worker(nz, handler("new"), worker_id="w", concurrency=1, grace=2)
                    with anyio.fail_after(20):  # registers once the stale session's node is gone
                        await tg.start(new.run)
                    await eventually(lambda: runs["new"] == [handle.id], timeout=20)
                    proxy.accept()  # the stale worker learns its session is gone, gets a new one
                    await eventually(lambda: sz.state is SessionState.CONNECTED, timeout=20)
                    gates["stale"].set()
                    await eventually(lambda: stale.counts["refused"] == 1, timeout=20)
                    assert stale.counts["completed"] == 0
                    assert await handle.status() is TaskState.SCHEDULED  # still the replacement's
                    assert await assigned(zk, "w", handle.id)
                    if then == "the stale worker stops":
                        stale.stop()
                        await eventually(lambda: stale._drained.is_set(), timeout=10)
                        data, stat = await zk.get("/rpc/workers/w")
                        assert stat.ephemeral_owner == nz.session_id
                        assert codec.loads_object(data, what="worker")["draining"] is False
                        assert await assigned(zk, "w", handle.id)  # not handed back
                        assert stale.counts["returned"] == 0
                    gates["new"].set()
                    with anyio.fail_after(20):
                        assert await handle.result() == b"new"
                    assert new.counts["completed"] == 1
                    if then == "the replacement leaves":
                        new.stop()

                        async def stale_registered() -> bool:
                            stat = await zk.exists("/rpc/workers/w")
                            return stat is not None and stat.ephemeral_owner == sz.session_id

                        await eventually_async(stale_registered, timeout=20)
                        after = await TaskQueue(zk).submit(b"u")
                        with anyio.fail_after(20):
                            assert await after.result() == b"stale"
                    tg.cancel_scope.cancel()
                finally:
                    for gate in gates.values():  # a failed check leaves no handler hanging
                        gate.set()


async def test_an_assignment_older_than_its_status_is_not_run(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """A worker completes with the status version the move that made its assignment left. An
    assignment whose status changed since (the task moved on after the worker listed it) is
    not run: the version it would read is another move's."""
    runs: list[str] = []

    async def record(task: Task) -> bytes:
        runs.append(task.id)
        return b"ran"

    queue = TaskQueue(zk)
    stale, fresh = await queue.submit(b"stale"), await queue.submit(b"fresh")
    await zk.ensure_path("/rpc/assign/w1")
    for handle in (stale, fresh):  # as the dispatcher assigns: status and assignment together
        await zk.multi(
            [
                Op.create(f"{handle.path}/status", b"schedule"),
                Op.create(f"/rpc/assign/w1/{handle.id}"),
            ]
        )
    await zk.set(f"{stale.path}/status", b"schedule")  # a later move of the stale one
    async with session(zk_server, zk) as wz, anyio.create_task_group() as tg:
        worker = Worker(wz, record, worker_id="w1", concurrency=2)
        await tg.start(worker.run)
        with anyio.fail_after(10):
            assert await fresh.result() == b"ran"
        await eventually(lambda: stale.id not in worker.running, timeout=10)
        assert runs == [fresh.id]
        tg.cancel_scope.cancel()


async def test_worker_survives_repeated_session_expiry_while_tasks_flow(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async def quick(task: Task) -> bytes:
        await anyio.sleep(0.005)
        return task.payload

    async with system(zk_server, zk, {"w1": (quick, 16)}, max_attempts=50) as (_, workers):
        worker = workers["w1"]
        wz = worker._client
        queue = TaskQueue(zk)
        handles: list[TaskHandle] = []
        for expiry in range(5):
            done = worker.counts["completed"]
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(submit_into, queue, handles, f"{expiry}-{i}".encode())
            await eventually(lambda d=done: worker.counts["completed"] >= d + 10, timeout=20)  # type: ignore[misc]
            session_id = wz.session_id
            await expire_session(wz)  # while its tasks run and their reads are in flight

            async def registered_again(old: int = session_id) -> bool:
                stat = await zk.exists("/rpc/workers/w1")
                return stat is not None and stat.ephemeral_owner not in (0, old)

            await eventually_async(registered_again, timeout=20)
        with anyio.fail_after(60):
            for handle in handles:
                assert await handle.result() == (await handle_payload_of(zk, handle))
        assert not worker._drained.is_set()  # still running
        stat = await zk.exists("/rpc/workers/w1")
        assert stat is not None and stat.ephemeral_owner == wz.session_id


async def submit_into(queue: TaskQueue, handles: list[TaskHandle], payload: bytes) -> None:
    handles.append(await queue.submit(payload))


async def handle_payload_of(zk: Client, handle: TaskHandle) -> bytes:
    return (await zk.get(handle.path))[0]


async def test_directory_of_a_departed_worker_is_removed(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    async with system(zk_server, zk, {"stays": (echo, 1)}):
        async with session(zk_server, zk) as wz, anyio.create_task_group() as tg:
            leaving = Worker(wz, echo, worker_id="leaving", concurrency=4)
            await tg.start(leaving.run)
            queue = TaskQueue(zk)
            handles = [await queue.submit(b"x") for _ in range(10)]
            with anyio.fail_after(20):
                for handle in handles:
                    assert await handle.result() == b"x"
            assert leaving.counts["completed"] > 0
            leaving.stop()

        async def removed() -> bool:
            return await zk.exists("/rpc/assign/leaving") is None

        await eventually_async(removed, timeout=20)
        assert await zk.exists("/rpc/assign/stays") is not None


async def test_a_task_its_lost_worker_never_started_moves_without_a_charge(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """A worker dies before it starts a task (here a bare registration that never runs
    anything): the task moves and is not charged a failed attempt (with max_attempts=1 a charge
    would make it dead); the lost worker's directory goes once its task moved."""
    async with system(zk_server, zk, {}, max_attempts=1):
        queue = TaskQueue(zk)
        async with session(zk_server, zk) as ghost:
            info = codec.dumps({"capacity": 1})
            await ghost.create("/rpc/workers/ghost", info, ephemeral=True)
            handle = await queue.submit(b"x")
            await eventually_async(lambda: assigned(zk, "ghost", handle.id), timeout=10)
        async with session(zk_server, zk) as wz, anyio.create_task_group() as tg:
            await tg.start(Worker(wz, echo, worker_id="alive").run)
            with anyio.fail_after(20):
                assert await handle.result() == b"x"
            assert [n for n in await zk.children(handle.path) if n.startswith("error-")] == []

            async def removed() -> bool:
                return await zk.exists("/rpc/assign/ghost") is None

            await eventually_async(removed, timeout=20)
            tg.cancel_scope.cancel()


async def test_a_started_task_lost_with_its_worker_is_charged_and_its_run_cancelled(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """The worker's session expires while it runs a task: the run is cancelled at once (its
    slot is free for the new session), the task counts one failed attempt and moves back to the
    worker, registered again on its new session."""
    runs: list[str] = []
    cancelled = anyio.Event()

    async def hangs_once(task: Task) -> bytes:
        runs.append(task.id)
        if len(runs) == 1:
            try:
                await anyio.sleep(60)
            finally:
                cancelled.set()
        return b"again"

    async with system(zk_server, zk, {}, max_attempts=2):
        handle = await TaskQueue(zk).submit(b"x")
        async with session(zk_server, zk) as wz, anyio.create_task_group() as tg:
            await tg.start(Worker(wz, hangs_once, worker_id="w1", concurrency=1).run)
            await eventually(lambda: runs == [handle.id], timeout=10)
            await expire_session(wz)
            with anyio.fail_after(20):
                await cancelled.wait()
                assert await handle.result() == b"again"
            assert runs == [handle.id, handle.id]
            errors = [n for n in await zk.children(handle.path) if n.startswith("error-")]
            assert len(errors) == 1
            error, _ = await zk.get(f"{handle.path}/{errors[0]}")
            assert error == b"worker w1 lost while running it"
            tg.cancel_scope.cancel()


async def test_a_completion_refused_for_another_reason_fails_the_attempt(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """A completion refused while the task is still the worker's (a result node already there):
    the attempt fails (assignment gone, status "failed") instead of the assignment staying
    behind, holding a slot and running again; the dispatcher retries it, then marks it dead."""
    runs: Counter[str] = Counter()

    async def strays(task: Task) -> bytes:
        runs[task.id] += 1
        if task.payload == b"stray" and runs[task.id] == 1:
            await zk.create(f"/rpc/tasks/{task.id}/result", b"stray")
        return b"mine"

    options = {"max_attempts": 2, "retry_delay": 0.05}
    async with system(zk_server, zk, {"w1": (strays, 1)}, **options) as (_, workers):
        queue = TaskQueue(zk)
        handle = await queue.submit(b"stray")
        with anyio.fail_after(20), pytest.raises(TaskFailed) as failed:
            await handle.result()
        assert "completion refused" in failed.value.error and failed.value.attempts == 2
        assert runs[handle.id] == 2
        assert await zk.children("/rpc/assign/w1") == []
        after = await queue.submit(b"fine")  # the slot is free
        with anyio.fail_after(20):
            assert await after.result() == b"mine"
        assert workers["w1"].counts["failed"] == 2


async def test_graceful_stop_does_not_hand_back_a_task_whose_thread_still_runs(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """A synchronous handler runs in a thread (as ``aiocoord worker`` runs one), which a
    cancellation cannot stop: past the grace its task stays with the stopping worker until the
    thread ends (it is not run a second time meanwhile), and its outcome is recorded."""
    started, release = threading.Event(), threading.Event()

    def blocking(task: Task) -> bytes:
        started.set()
        release.wait(60)
        return b"thread"

    async def in_thread(task: Task) -> bytes:
        result: bytes = await anyio.to_thread.run_sync(blocking, task)
        return result

    others: list[str] = []

    async def other(task: Task) -> bytes:
        others.append(task.id)
        return b"other"

    async with (
        system(zk_server, zk, {}),
        session(zk_server, zk) as z1,
        session(zk_server, zk) as z2,
        anyio.create_task_group() as tg,
    ):
        try:
            w1 = Worker(z1, in_thread, worker_id="w1", concurrency=1, grace=0.3)
            await tg.start(w1.run)
            handle = await TaskQueue(zk).submit(b"x")
            with anyio.fail_after(10):
                await anyio.to_thread.run_sync(started.wait, 10)
            await tg.start(Worker(z2, other, worker_id="w2").run)  # would take it if handed back
            w1.stop()
            with anyio.move_on_after(3):  # an observation window well past the grace
                while True:
                    assert others == [] and await assigned(zk, "w1", handle.id)
                    await anyio.sleep(0.1)
            assert not w1._drained.is_set()  # waiting for its thread
            release.set()
            with anyio.fail_after(20):
                assert await handle.result() == b"thread"
            await eventually(lambda: w1._drained.is_set(), timeout=10)
            assert others == [] and w1.counts["completed"] == 1
            tg.cancel_scope.cancel()
        finally:
            release.set()  # a failed check leaves no thread behind


async def test_failed_tasks_are_retried_after_a_growing_delay(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    attempts: list[float] = []

    async def failing(task: Task) -> bytes:
        attempts.append(time.monotonic())
        raise RuntimeError("not today")

    options = {"max_attempts": 3, "retry_delay": 0.4}
    async with system(zk_server, zk, {"w1": (failing, 1)}, **options):
        handle = await TaskQueue(zk).submit(b"x")
        with anyio.fail_after(30), pytest.raises(TaskFailed):
            await handle.result()
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.4
    assert attempts[2] - attempts[1] >= 0.8  # doubled after the second failure


def test_retry_delay_doubles_up_to_its_cap() -> None:
    assert [_retry_delay(n, 1.0, 5.0) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 5.0]
    assert _retry_delay(10_000, 1.0, 60.0) == 60.0
    assert _retry_delay(3, 0.0, 60.0) == 0.0
