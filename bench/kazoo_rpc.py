"""The kazoo baseline of the task benchmark: the same ``/rpc`` layout done the way kazoo scripts
do it — random assignment, one write per step (no multi), a thread per running task.

    python -m bench.kazoo_rpc dispatcher --hosts H --root R
    python -m bench.kazoo_rpc worker --hosts H --root R --id W [--concurrency N]
"""

from __future__ import annotations

import argparse
import queue
import random
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError


def dispatcher(zk: KazooClient, root: str) -> None:
    while True:  # become master (the old scripts' way: an ephemeral node)
        try:
            zk.create(f"{root}/master", b"kazoo", ephemeral=True, makepath=True)
            break
        except NodeExistsError:
            gone = threading.Event()
            if zk.exists(f"{root}/master", watch=lambda _e, gone=gone: gone.set()):
                gone.wait()
    workers: list[str] = []
    new: queue.Queue[str] = queue.Queue()
    seen: set[str] = set()
    for path in ("workers", "assign", "tasks"):
        zk.ensure_path(f"{root}/{path}")

    @zk.ChildrenWatch(f"{root}/workers")  # type: ignore[misc]
    def on_workers(children: list[str]) -> None:
        workers[:] = children

    @zk.ChildrenWatch(f"{root}/tasks")  # type: ignore[misc]
    def on_tasks(children: list[str]) -> None:
        for task in sorted(children):
            if task not in seen:
                seen.add(task)
                new.put(task)

    while True:
        task = new.get()
        while not workers:
            threading.Event().wait(0.01)
        worker = random.choice(workers)
        # two separate writes, pipelined (a crash between them leaves the task half-assigned);
        # status first, so that the worker finds it when it sees the assignment
        zk.create_async(f"{root}/tasks/{task}/status", b"schedule")
        zk.create_async(f"{root}/assign/{worker}/{task}", b"")


def worker(zk: KazooClient, root: str, worker_id: str, concurrency: int) -> None:
    zk.ensure_path(f"{root}/assign/{worker_id}")
    zk.create(f"{root}/workers/{worker_id}", b"", ephemeral=True, makepath=True)
    pool = ThreadPoolExecutor(concurrency)
    running: set[str] = set()
    lock = threading.Lock()

    def execute(task: str) -> None:
        try:
            payload, _ = zk.get(f"{root}/tasks/{task}")
            zk.create(f"{root}/tasks/{task}/result", payload)  # echo
            zk.set(f"{root}/tasks/{task}/status", b"done")
            zk.delete(f"{root}/assign/{worker_id}/{task}")
        except NoNodeError:
            pass
        finally:
            with lock:
                running.discard(task)

    @zk.ChildrenWatch(f"{root}/assign/{worker_id}")  # type: ignore[misc]
    def on_assign(children: list[str]) -> None:
        with lock:
            fresh = [t for t in children if t not in running]
            running.update(fresh)
        for task in fresh:
            pool.submit(execute, task)

    threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["dispatcher", "worker"])
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--id", default="w")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    zk = KazooClient(hosts=args.hosts)
    zk.start(timeout=30)
    try:
        run: Any = dispatcher if args.role == "dispatcher" else worker
        if args.role == "dispatcher":
            run(zk, args.root)
        else:
            run(zk, args.root, args.id, args.concurrency)
    finally:
        zk.stop()
        zk.close()


if __name__ == "__main__":
    main()
