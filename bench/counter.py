"""Counter increments under contention: ``writers`` sessions incrementing one counter at once,
aiocoord's ``Counter`` beside kazoo's (kazoo's default command retry, whose back-off after each
conflict is 0.1 s and more plus up to 0.4 s of jitter, and kazoo with a 1 ms retry delay and no
jitter, closer to aiocoord's immediate re-read). Increments per second over the run, latency per
increment (conflicts and retries included)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import anyio

import aiocoord

from .stats import latency

WRITERS = 10


async def _aiocoord(hosts: str, writers: int, each: int) -> tuple[float, list[float]]:
    path = f"/bench-counter-{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    clients = [aiocoord.Client(hosts) for _ in range(writers)]
    for c in clients:
        await c.__aenter__()
    try:
        await aiocoord.Counter(clients[0], path).value()  # the node exists before the clock runs

        async def writer(zk: aiocoord.Client) -> None:
            counter = aiocoord.Counter(zk, path)
            for _ in range(each):
                start = time.perf_counter()
                await counter.add(1)
                samples.append(time.perf_counter() - start)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for c in clients:
                tg.start_soon(writer, c)
        took = time.perf_counter() - started
        assert await aiocoord.Counter(clients[0], path).value() == writers * each
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
    return took, samples


def _kazoo(hosts: str, writers: int, each: int, retry: dict[str, Any]) -> tuple[float, list[float]]:
    from kazoo.client import KazooClient

    path = f"/bench-kazoo-counter-{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    lock = threading.Lock()
    clients = [KazooClient(hosts=hosts, timeout=10, command_retry=retry) for _ in range(writers)]
    for c in clients:
        c.start(timeout=15)
    clients[0].ensure_path(path)

    def writer(client: Any) -> None:
        counter = client.Counter(path)
        mine = []
        for _ in range(each):
            start = time.perf_counter()
            counter += 1
            mine.append(time.perf_counter() - start)
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=writer, args=(c,), daemon=True) for c in clients]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    took = time.perf_counter() - started
    assert clients[0].Counter(path).value == writers * each
    for c in clients:
        c.stop()
        c.close()
    return took, samples


def _row(took: float, samples: list[float]) -> dict[str, Any]:
    return {"increments_per_s": len(samples) / took, **latency(samples)}


def run(hosts: str, *, quick: bool) -> dict[str, Any]:
    each = 20 if quick else 200
    out: dict[str, Any] = {"writers": WRITERS, "increments_per_writer": each}
    print("  counter increments ...", flush=True)
    out["aiocoord"] = _row(
        *anyio.run(_aiocoord, hosts, WRITERS, each, backend_options={"use_uvloop": True})
    )
    out["kazoo"] = _row(*_kazoo(hosts, WRITERS, each, {"max_tries": -1}))
    out["kazoo_1ms"] = _row(
        *_kazoo(hosts, WRITERS, each, {"max_tries": -1, "delay": 0.001, "max_jitter": 0.0})
    )
    return out


def print_table(result: dict[str, Any]) -> None:
    print()
    print(f"Counter: {result['writers']} writers incrementing one counter at once "
          f"({result['increments_per_writer']} each); ratio = aiocoord / kazoo")  # fmt: skip
    a = result["aiocoord"]
    print(f"{'':<22}{'increments/s':>14}{'p50 ms':>10}{'p99 ms':>10}{'ratio':>8}")
    for name, key in (
        ("aiocoord", "aiocoord"),
        ("kazoo", "kazoo"),
        ("kazoo (1 ms retry)", "kazoo_1ms"),
    ):
        r = result[key]
        ratio = a["increments_per_s"] / r["increments_per_s"]
        print(f"{name:<22}{r['increments_per_s']:>14,.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
              f"{ratio:>7.1f}x")  # fmt: skip
