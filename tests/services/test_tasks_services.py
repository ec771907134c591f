"""Task dispatch as separate processes against a real ZooKeeper: 10,000 tasks while two of four
workers are killed with kill -9, a worker paused (SIGSTOP) past its session timeout, the active
dispatcher killed mid-stream, a poison task that crashes its workers, and the commands."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aiocoord import Client, NoNode, TaskFailed, TaskHandle, TaskQueue, TaskState
from aiocoord.testing import ZooKeeperServer
from tests.helpers import eventually, eventually_async
from tests.services.processes import service as process

HANDLERS = "tests.services.task_handlers"
COMPLETED = re.compile(r"worker (\S+): completed (task-\d{10})")
REASSIGNED = re.compile(r"dispatcher: (task-\d{10}) reassigned to (\S+)")


class Service:
    """A service process whose log goes to a file."""

    def __init__(self, proc: anyio.abc.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, signum: int = signal.SIGKILL) -> None:
        os.kill(self.proc.pid, signum)


@asynccontextmanager
async def service(log: Path, *args: str) -> AsyncIterator[Service]:
    async with process(*args, log=log) as proc:
        yield Service(proc, log)


def zk_args(zk_server: ZooKeeperServer, zk: Client) -> list[str]:
    return ["--zk", zk_server.hosts, "--namespace", zk.namespace, "--session-timeout", "2"]


def worker_args(zk_server: ZooKeeperServer, zk: Client, worker_id: str, handler: str) -> list[str]:
    return ["worker", *zk_args(zk_server, zk), "--id", worker_id,
            "--handler", f"{HANDLERS}:{handler}"]  # fmt: skip


async def submit_all(queue: TaskQueue, payloads: list[bytes]) -> list[TaskHandle]:
    handles: list[TaskHandle] = []
    for i in range(0, len(payloads), 500):  # pipelined on one session, 500 in flight
        handles += await asyncio.gather(*(queue.submit(p) for p in payloads[i : i + 500]))
    return handles


def completions(*services: Service) -> Counter[str]:
    """How often each task is reported completed in the workers' logs."""
    return Counter(m.group(2) for s in services for m in COMPLETED.finditer(s.text()))


async def test_ten_thousand_tasks_while_two_of_four_workers_are_killed(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    print(f"kill moments drawn with seed {seed}")
    count = 10_000
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            service(tmp_path / "dispatcher.log", "dispatcher", *zk_args(zk_server, zk))
        )
        workers = [
            await stack.enter_async_context(
                service(
                    tmp_path / f"w{i}.log",
                    *worker_args(zk_server, zk, f"w{i}", "tagged"),
                    "--concurrency",
                    "16",
                )
            )
            for i in range(4)
        ]
        queue = TaskQueue(zk)
        payloads = [f"job {i}".encode() for i in range(count)]
        handles = await submit_all(queue, payloads)
        assert len({h.id for h in handles}) == count
        victims = rng.sample(workers, 2)
        # each is killed once a random number of tasks are done (in the first and second half)
        for victim, (low, high) in zip(victims, ((500, 4000), (5000, 8000)), strict=True):
            threshold = rng.randrange(low, high)
            await eventually(lambda t=threshold: sum(completions(*workers).values()) >= t,  # type: ignore[misc]
                             timeout=120, interval=0.2)  # fmt: skip
            victim.kill()
            await victim.proc.wait()
        with anyio.fail_after(240):
            results = await asyncio.gather(*(h.result() for h in handles))
        survivors = [w for w in workers if w not in victims]
        for payload, result in zip(payloads, results, strict=True):
            done_by = result.rsplit(b" by ", 1)
            assert done_by[0] == payload
        completed = completions(*workers)
        assert max(completed.values()) == 1  # no task reported done twice
        assert len(completed) >= count - 2 * 16  # (a killed worker may die before it logs)
        for task, worker in ((m.group(2), m.group(1)) for w in workers
                             for m in COMPLETED.finditer(w.text())):  # fmt: skip
            index = int(task.rsplit("-", 1)[1]) - int(handles[0].id.rsplit("-", 1)[1])
            assert results[index].endswith(f" by {worker}".encode())
        dispatcher_log = (tmp_path / "dispatcher.log").read_text()
        # the tasks the victims held were moved, and each was completed by its last new owner
        moved = {task: worker for task, worker in REASSIGNED.findall(dispatcher_log)}
        assert moved
        first = int(handles[0].id.rsplit("-", 1)[1])
        for task, worker in moved.items():
            assert results[int(task.rsplit("-", 1)[1]) - first].endswith(f" by {worker}".encode())
        assert any(w in {s.log.stem for s in survivors} for w in moved.values())
        counts = await queue.counts()
        assert counts[TaskState.DONE] == count and sum(counts.values()) == count
        for victim in victims:
            worker_id = victim.log.stem
            gone = (f"worker {worker_id} is gone with", f"worker {worker_id} left")
            assert any(line in dispatcher_log for line in gone), worker_id


async def test_paused_worker_cannot_complete_its_moved_task(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            service(tmp_path / "dispatcher.log", "dispatcher", *zk_args(zk_server, zk))
        )
        paused = await stack.enter_async_context(
            service(tmp_path / "wA.log", *worker_args(zk_server, zk, "wA", "sleepy"))
        )
        queue = TaskQueue(zk)

        async def registered(worker: str) -> bool:
            return await zk.exists(f"/rpc/workers/{worker}") is not None

        await eventually_async(lambda: registered("wA"), timeout=60)
        handle = await queue.submit(b"3 slow")

        async def assigned_to_a() -> bool:
            return await zk.exists(f"/rpc/assign/wA/{handle.id}") is not None

        await eventually_async(assigned_to_a, timeout=30)
        paused.kill(signal.SIGSTOP)  # past its 2 s session timeout: presumed dead
        await stack.enter_async_context(
            service(tmp_path / "wB.log", *worker_args(zk_server, zk, "wB", "sleepy"))
        )
        with anyio.fail_after(90):  # wB starts (a process, under load), then 3 s of work
            assert await handle.result() == b"3 slow by wB"
        paused.kill(signal.SIGCONT)  # its handler's sleep is over: it tries to complete

        def gave_up() -> bool:
            text = paused.text()
            return f"completion of {handle.id}" in text or f"{handle.id} stopped" in text

        await eventually(gave_up, timeout=60, interval=0.05)
        assert f"completed {handle.id}" not in paused.text()
        assert (await zk.get(f"{handle.path}/result"))[0] == b"3 slow by wB"
        assert await handle.status() is TaskState.DONE


async def test_standby_dispatcher_takes_over_mid_stream(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        dispatchers = {
            name: await stack.enter_async_context(
                service(
                    tmp_path / f"{name}.log",
                    "dispatcher",
                    *zk_args(zk_server, zk),
                    "--identity",
                    name,
                )
            )
            for name in ("d1", "d2")
        }
        for i in range(2):
            await stack.enter_async_context(
                service(tmp_path / f"w{i}.log", *worker_args(zk_server, zk, f"w{i}", "tagged"))
            )

        async def master() -> bytes | None:
            try:
                return (await zk.get("/rpc/master"))[0]
            except NoNode:
                return None

        async def elected() -> bool:
            return await master() is not None

        await eventually_async(elected, timeout=20)
        active = (await master() or b"").decode()
        queue = TaskQueue(zk)
        handles: list[TaskHandle] = []
        for i in range(1000):  # a stream of tasks; the active dispatcher dies in the middle
            handles.append(await queue.submit(f"{i}".encode()))
            if i == 400:
                dispatchers[active].kill()
        standby = "d2" if active == "d1" else "d1"
        with anyio.fail_after(60):
            results = await asyncio.gather(*(h.result() for h in handles))
        assert [r.rsplit(b" by ", 1)[0] for r in results] == [f"{i}".encode() for i in range(1000)]
        assert await master() == standby.encode()
        assert "active" in dispatchers[standby].text()


async def test_poison_task_ends_dead_while_other_tasks_complete(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    crashes = 0
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        await stack.enter_async_context(
            service(
                tmp_path / "dispatcher.log",
                "dispatcher",
                *zk_args(zk_server, zk),
                "--max-attempts",
                "3",
            )
        )

        async def supervise(worker_id: str) -> None:
            """Restart the worker whenever it dies, as systemd would."""
            nonlocal crashes
            while True:
                log = tmp_path / f"{worker_id}.log"
                async with service(log, *worker_args(zk_server, zk, worker_id, "crash_on_poison"),
                                   "--concurrency", "2") as worker:  # fmt: skip
                    await worker.proc.wait()
                    crashes += worker.proc.returncode == 3

        for i in range(3):
            tg.start_soon(supervise, f"w{i}")
        queue = TaskQueue(zk)
        poison = await queue.submit(b"poison")
        others = await submit_all(queue, [f"fine {i}".encode() for i in range(200)])
        with anyio.fail_after(90):
            with pytest.raises(TaskFailed) as failed:
                await poison.result()
            results = await asyncio.gather(*(h.result() for h in others))
        assert [r.rsplit(b" by ", 1)[0] for r in results] == [
            f"fine {i}".encode() for i in range(200)
        ]
        assert failed.value.attempts == 3
        assert "lost while running it" in failed.value.error
        assert crashes == 3  # it ran exactly max-attempts times
        assert await poison.status() is TaskState.DEAD
        tg.cancel_scope.cancel()


def test_submit_and_tasks_commands(zk_server: ZooKeeperServer, tmp_path: Path) -> None:
    namespace = f"/cmd-{os.getpid()}-{random.randrange(1 << 20)}"
    args = ["--zk", zk_server.hosts, "--namespace", namespace, "--session-timeout", "2"]

    def run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services", *cmd], capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    queued = run("submit", *args, "hello")
    assert queued.returncode == 0 and re.fullmatch(r"task-\d{10}\n", queued.stdout)
    counts = run("tasks", *args, "--json")
    assert counts.returncode == 0 and '"pending":1' in counts.stdout
    assert json.loads(counts.stdout) == {
        "pending": 1,
        "assigned": 0,
        "failed": 0,
        "done": 0,
        "dead": 0,
        "cancelled": 0,
    }
    bad = run("tasks", *args, "task-9999999999")
    assert bad.returncode == 1 and "unknown" in bad.stdout
    malformed = run("tasks", *args, "nonsense")
    assert malformed.returncode == 2 and "bad task id" in malformed.stderr  # before a session
    waited = run("submit", *args, "--wait", "--timeout", "1", "x")
    assert waited.returncode == 1 and "no result within 1" in waited.stderr
    with (tmp_path / "w.log").open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "services", "worker", *args,
                                   "--id", "cli"], stdout=out, stderr=out)  # fmt: skip
        dispatcher = subprocess.Popen([sys.executable, "-m", "services", "dispatcher", *args],
                                      stdout=out, stderr=out)  # fmt: skip
        try:
            done = run("submit", *args, "--wait", "--timeout", "20", "echo me")
            assert done.returncode == 0 and done.stdout == "echo me"
        finally:
            for proc in (worker, dispatcher):
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=20) == 0
    log = (tmp_path / "w.log").read_text()
    assert "worker cli: stopped" in log and "resigned" in log
    handler = run("worker", *args, "--handler", "nowhere:nothing")
    assert handler.returncode == 2 and "cannot import nowhere" in handler.stderr
    both = run("worker", *args, "--handler", f"{HANDLERS}:tagged", "--shell")
    assert both.returncode == 2 and "exclude each other" in both.stderr
