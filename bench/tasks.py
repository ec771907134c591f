"""Tasks: end-to-end throughput (tasks/s) and submit-to-result latency (p50/p99) of no-op tasks
with one dispatcher and 4 worker processes (concurrency 16 each), aiocoord beside a kazoo
implementation of the same ``/rpc`` layout (``bench/kazoo_rpc.py``: random assignment, one
write per step), on the same server in the same run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from kazoo.client import KazooClient

import aiocoord

from .stats import latency

HERE = Path(__file__).resolve().parent
WORKERS = 4
CONCURRENCY = 16


@contextmanager
def _processes(commands: list[list[str]]) -> Iterator[None]:
    procs = [
        subprocess.Popen(c, cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for c in commands
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _aiocoord_system(hosts: str, root: str) -> list[list[str]]:
    base = [sys.executable, "-m", "services"]
    common = ["--zk", hosts, "--root", root, "--log-level", "WARNING"]
    return [[*base, "dispatcher", *common]] + [
        [*base, "worker", *common, "--id", f"w{i}", "--concurrency", str(CONCURRENCY)]
        for i in range(WORKERS)
    ]


def _kazoo_system(hosts: str, root: str) -> list[list[str]]:
    base = [sys.executable, "-m", "bench.kazoo_rpc"]
    common = ["--hosts", hosts, "--root", root]
    return [[*base, "dispatcher", *common]] + [
        [*base, "worker", *common, "--id", f"w{i}", "--concurrency", str(CONCURRENCY)]
        for i in range(WORKERS)
    ]


async def _aiocoord(hosts: str, root: str, count: int, rounds: int) -> dict[str, Any]:
    async with aiocoord.Client(hosts) as zk:
        with anyio.fail_after(60):
            while not await _ready(zk, root):  # noqa: ASYNC110 - the processes are starting
                await anyio.sleep(0.05)
        queue = aiocoord.TaskQueue(zk, root)
        samples = []
        for i in range(rounds):
            started = time.perf_counter()
            handle = await queue.submit(f"probe {i}".encode())
            await handle.result()
            samples.append(time.perf_counter() - started)
        started = time.perf_counter()
        handles = []
        for i in range(0, count, 500):
            handles += await asyncio.gather(
                *(queue.submit(f"job {j}".encode()) for j in range(i, min(count, i + 500)))
            )
        with anyio.fail_after(600):
            await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - started
    return {"tasks_per_s": count / elapsed, "latency": latency(samples)}


async def _ready(zk: aiocoord.Client, root: str) -> bool:
    try:
        workers = await zk.children(f"{root}/workers")
    except aiocoord.NoNode:
        return False
    return len(workers) >= WORKERS and await zk.exists(f"{root}/master") is not None


def _kazoo(hosts: str, root: str, count: int, rounds: int) -> dict[str, Any]:
    zk = KazooClient(hosts=hosts)
    zk.start(timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            workers = zk.get_children(f"{root}/workers") if zk.exists(f"{root}/workers") else []
            if len(workers) >= WORKERS and zk.exists(f"{root}/master"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("kazoo workers did not register")
            time.sleep(0.05)

        def wait_done(paths: list[str]) -> None:
            left = set(paths)
            done = threading.Condition()

            def watch(path: str) -> None:
                def on_status(data: bytes | None, _stat: Any) -> bool:
                    if data == b"done":
                        with done:
                            left.discard(path)
                            done.notify_all()
                        return False  # stop watching
                    return True

                zk.DataWatch(f"{path}/status", on_status)

            for path in paths:
                watch(path)
            with done:
                if not done.wait_for(lambda: not left, timeout=600):
                    raise TimeoutError(f"{len(left)} kazoo tasks not done")
            for path in paths:
                zk.get(f"{path}/result")

        samples = []
        for i in range(rounds):
            started = time.perf_counter()
            path = zk.create(f"{root}/tasks/task-", f"probe {i}".encode(), sequence=True)
            wait_done([path])
            samples.append(time.perf_counter() - started)
        started = time.perf_counter()
        futures = [
            zk.create_async(f"{root}/tasks/task-", f"job {j}".encode(), sequence=True)
            for j in range(count)
        ]
        wait_done([f.get(timeout=60) for f in futures])
        elapsed = time.perf_counter() - started
        return {"tasks_per_s": count / elapsed, "latency": latency(samples)}
    finally:
        zk.stop()
        zk.close()


def run(hosts: str, *, quick: bool = False) -> dict[str, Any]:
    count, rounds = (500, 30) if quick else (3000, 200)
    print("  tasks: throughput and latency ...", flush=True)
    root = f"/bench-tasks-{uuid.uuid4().hex[:8]}"
    with _processes(_kazoo_system(hosts, f"{root}-kazoo")):
        kazoo = _kazoo(hosts, f"{root}-kazoo", count, rounds)
    with _processes(_aiocoord_system(hosts, f"{root}-aiocoord")):
        ours = anyio.run(
            _aiocoord, hosts, f"{root}-aiocoord", count, rounds,
            backend_options={"use_uvloop": True},
        )  # fmt: skip
    return {"tasks": count, "rounds": rounds, "workers": WORKERS, "concurrency": CONCURRENCY,
            "aiocoord": ours, "kazoo": kazoo}  # fmt: skip


def print_table(results: dict[str, Any]) -> None:
    a, k = results["aiocoord"], results["kazoo"]
    print()
    print(
        f"Tasks: {results['tasks']} no-op tasks, {results['workers']} worker processes x "
        f"{results['concurrency']}; latency over {results['rounds']} one-at-a-time tasks "
        "(aiocoord vs kazoo /rpc scripts)"
    )
    print(f"{'':<22}{'aiocoord':>12}{'kazoo':>12}{'ratio':>9}")
    print(
        f"{'tasks/s':<22}{a['tasks_per_s']:>12,.0f}{k['tasks_per_s']:>12,.0f}"
        f"{a['tasks_per_s'] / k['tasks_per_s']:>8.1f}x"
    )
    for q in ("p50_ms", "p99_ms"):
        print(
            f"{'submit-to-result ' + q[:3]:<22}{a['latency'][q]:>10.2f}ms{k['latency'][q]:>10.2f}ms"
            f"{k['latency'][q] / a['latency'][q]:>8.1f}x"
        )
