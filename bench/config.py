"""Config distribution: publish-to-applied latency across many watcher sessions (p50/p99) and
publish throughput, aiocoord beside kazoo's ChildrenWatch / DataWatch on the same server.

History mode: aiocoord ``ConfigStore.publish`` + ``ConfigStore.watch()`` against a kazoo
publisher creating ``conf-`` sequential nodes and ChildrenWatch watchers that read the largest
child (what the older scripts do). Single-node mode: ``set`` + ``watch_node`` against kazoo's
DataWatch. Latency runs from just before the publish call to the moment each watcher holds the
new bytes; the next round starts once every watcher has it.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import anyio
from kazoo.client import KazooClient

import aiocoord

from .stats import latency


async def _aiocoord_latency(hosts: str, mode: str, rounds: int, watchers: int) -> list[float]:
    path = f"/bench-config-{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    seen: dict[bytes, int] = {}
    started: dict[bytes, float] = {}
    complete = [anyio.Event()]
    async with AsyncExitStack() as stack:
        pub = await stack.enter_async_context(aiocoord.Client(hosts))
        store = aiocoord.ConfigStore(pub, path)
        if mode == "history":
            await store.publish(b"init")
        else:
            await pub.create(path, b"init")
        clients = [await stack.enter_async_context(aiocoord.Client(hosts)) for _ in range(watchers)]

        def record(data: bytes) -> None:
            now = time.perf_counter()
            if data in started:
                samples.append(now - started[data])
            seen[data] = seen.get(data, 0) + 1
            if seen[data] == watchers:
                complete[0].set()

        async with anyio.create_task_group() as tg:
            for client in clients:

                async def watch(client: aiocoord.Client = client) -> None:
                    feeds = (
                        aiocoord.ConfigStore(client, path).watch()
                        if mode == "history"
                        else aiocoord.watch_node(client, path)
                    )
                    async with feeds as feed:
                        async for version in feed:
                            record(version.data)

                tg.start_soon(watch)
            with anyio.fail_after(60):
                await complete[0].wait()
            for r in range(rounds):
                data = f"round {r}".encode()
                complete[0] = anyio.Event()
                started[data] = time.perf_counter()
                if mode == "history":
                    await store.publish(data)
                else:
                    await pub.set(path, data)
                with anyio.fail_after(30):
                    await complete[0].wait()
            tg.cancel_scope.cancel()
    return samples


def _kazoo_latency(hosts: str, mode: str, rounds: int, watchers: int) -> list[float]:
    path = f"/bench-config-{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    seen: dict[bytes, int] = {}
    started: dict[bytes, float] = {}
    lock = threading.Condition()
    pub = KazooClient(hosts=hosts)
    pub.start(timeout=30)
    if mode == "history":
        pub.create(f"{path}/conf-", b"init", sequence=True, makepath=True)
    else:
        pub.create(path, b"init")
    clients = []

    def record(data: bytes) -> None:
        now = time.perf_counter()
        with lock:
            if data in started:
                samples.append(now - started[data])
            seen[data] = seen.get(data, 0) + 1
            lock.notify_all()

    try:
        for _ in range(watchers):
            client = KazooClient(hosts=hosts)
            client.start(timeout=30)
            clients.append(client)
            if mode == "history":

                def on_children(children: list[str], client: KazooClient = client) -> None:
                    if children:
                        data, _ = client.get(f"{path}/{max(children)}")
                        record(data)

                client.ChildrenWatch(path, on_children)
            else:

                def on_data(data: bytes | None, _stat: object) -> None:
                    if data is not None:
                        record(data)

                client.DataWatch(path, on_data)

        def wait_all(data: bytes) -> None:
            with lock:
                if not lock.wait_for(lambda: seen.get(data, 0) >= watchers, timeout=30):
                    raise TimeoutError(f"kazoo watchers did not all see {data!r}")

        wait_all(b"init")
        for r in range(rounds):
            data = f"round {r}".encode()
            started[data] = time.perf_counter()
            if mode == "history":
                pub.create(f"{path}/conf-", data, sequence=True)
            else:
                pub.set(path, data)
            wait_all(data)
    finally:
        for client in [pub, *clients]:
            client.stop()
            client.close()
    return samples


async def _aiocoord_throughput(hosts: str, count: int, inflight: int) -> float:
    path = f"/bench-config-{uuid.uuid4().hex[:8]}"
    async with aiocoord.Client(hosts) as zk:
        store = aiocoord.ConfigStore(zk, path)
        await store.publish(b"init")
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for worker in range(inflight):

                async def publish(worker: int = worker) -> None:
                    for n in range(worker, count, inflight):
                        await store.publish(f"v{n}".encode())

                tg.start_soon(publish)
        return count / (time.perf_counter() - started)


def _kazoo_throughput(hosts: str, count: int, inflight: int) -> float:
    path = f"/bench-config-{uuid.uuid4().hex[:8]}"
    zk = KazooClient(hosts=hosts)
    zk.start(timeout=30)
    try:
        zk.ensure_path(path)
        started = time.perf_counter()
        pending: list[Any] = []
        for n in range(count):
            pending.append(zk.create_async(f"{path}/conf-", f"v{n}".encode(), sequence=True))
            if len(pending) >= inflight:
                pending.pop(0).get(timeout=30)
        for p in pending:
            p.get(timeout=30)
        return count / (time.perf_counter() - started)
    finally:
        zk.stop()
        zk.close()


def run(hosts: str, *, quick: bool = False) -> dict[str, Any]:
    watchers, rounds, count = (20, 10, 200) if quick else (100, 30, 2000)
    out: dict[str, Any] = {"watchers": watchers, "rounds": rounds, "latency": {}, "throughput": {}}
    for mode in ("history", "node"):
        print(f"  config {mode} latency, {watchers} watcher sessions ...", flush=True)
        kazoo = latency(_kazoo_latency(hosts, mode, rounds, watchers))
        ours = latency(
            anyio.run(
                _aiocoord_latency,
                hosts,
                mode,
                rounds,
                watchers,
                backend_options={"use_uvloop": True},
            )
        )
        out["latency"][mode] = {"aiocoord": ours, "kazoo": kazoo}
    for inflight in (1, 50):
        print(f"  config publish throughput, {inflight} in flight ...", flush=True)
        out["throughput"][inflight] = {
            "kazoo": _kazoo_throughput(hosts, count, inflight),
            "aiocoord": anyio.run(
                _aiocoord_throughput, hosts, count, inflight, backend_options={"use_uvloop": True}
            ),
        }
    return out


def print_table(results: dict[str, Any]) -> None:
    print()
    print(
        f"Config: publish-to-applied latency over {results['watchers']} watcher sessions, "
        f"{results['rounds']} versions (ms); ratio = kazoo / aiocoord (>1: aiocoord faster)"
    )
    head = f"{'mode':<9}{'aiocoord p50/p99':>20}{'kazoo p50/p99':>20}"
    print(f"{head}{'p50 ratio':>11}{'p99 ratio':>11}")
    for mode, row in results["latency"].items():
        a, k = row["aiocoord"], row["kazoo"]
        p50, p99 = k["p50_ms"] / a["p50_ms"], k["p99_ms"] / a["p99_ms"]
        print(
            f"{mode:<9}{a['p50_ms']:>11.2f} /{a['p99_ms']:>7.2f}{k['p50_ms']:>11.2f} /"
            f"{k['p99_ms']:>7.2f}{p50:>10.1f}x{p99:>10.1f}x"
        )
    print()
    print("Config: publishes per second (aiocoord: multi() create + pruning; kazoo: plain create)")
    print(f"{'in flight':<10}{'aiocoord':>12}{'kazoo':>12}{'ratio':>9}")
    for inflight, row in results["throughput"].items():
        ratio = row["aiocoord"] / row["kazoo"]
        print(f"{inflight!s:<10}{row['aiocoord']:>12,.0f}{row['kazoo']:>12,.0f}{ratio:>8.1f}x")
