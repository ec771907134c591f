"""Lock handover and semaphore throughput under contention, aiocoord beside kazoo's recipes on
the same server in the same run.

- Lock handover: 10 contenders (one session each) take turns on one lock; a sample is the time
  from the holder calling ``release()`` to the next holder's ``acquire()`` returning (the delete,
  its watch event to the one waiter behind, and that waiter's check).
- Semaphore: 10 contenders (one session each) cycle acquire/release on a 3-lease semaphore; the
  row is completed cycles per second, and the latency of one acquire (wait included).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import anyio

import aiocoord

from .stats import latency

CONTENDERS = 10
LEASES = 3


async def _aiocoord_lock(hosts: str, rounds: int) -> list[float]:
    path = f"/bench-lock-{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    released_at = [0.0]
    done = anyio.Event()

    async def contender(zk: aiocoord.Client) -> None:
        lock = aiocoord.Lock(zk, path)
        while not done.is_set():
            await lock.acquire()
            if released_at[0]:
                samples.append(time.perf_counter() - released_at[0])
            if len(samples) >= rounds:
                done.set()
            released_at[0] = time.perf_counter()
            await lock.release()

    clients = [aiocoord.Client(hosts) for _ in range(CONTENDERS)]
    for zk in clients:
        await zk.__aenter__()
    try:
        async with anyio.create_task_group() as tg:
            for zk in clients:
                tg.start_soon(contender, zk)
            await done.wait()
            tg.cancel_scope.cancel()
    finally:
        for zk in clients:
            await zk.aclose()
    return samples[:rounds]


def _kazoo_clients(hosts: str) -> list[Any]:
    from kazoo.client import KazooClient

    clients = [KazooClient(hosts=hosts, timeout=10) for _ in range(CONTENDERS)]
    for c in clients:
        c.start(timeout=15)
    return clients


def _kazoo_lock(hosts: str, rounds: int) -> list[float]:
    path = f"/bench-kazoo-lock-{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    released_at = [0.0]
    stop = threading.Event()
    clients = _kazoo_clients(hosts)

    def contend(client: Any) -> None:
        lock = client.Lock(path)
        while not stop.is_set():
            if not lock.acquire(timeout=30):
                continue
            if released_at[0]:
                samples.append(time.perf_counter() - released_at[0])
            if len(samples) >= rounds:
                stop.set()
            released_at[0] = time.perf_counter()
            lock.release()

    _run_threads(clients, contend, stop, timeout=300)
    return samples[:rounds]


async def _aiocoord_semaphore(hosts: str, cycles: int) -> tuple[list[float], float]:
    path = f"/bench-sem-{uuid.uuid4().hex[:8]}"
    waits: list[float] = []
    done = anyio.Event()

    async def contender(zk: aiocoord.Client) -> None:
        sem = aiocoord.Semaphore(zk, path, max_leases=LEASES)
        while not done.is_set():
            asked = time.perf_counter()
            await sem.acquire()
            waits.append(time.perf_counter() - asked)
            if len(waits) >= cycles:
                done.set()
            await sem.release()

    clients = [aiocoord.Client(hosts) for _ in range(CONTENDERS)]
    for zk in clients:
        await zk.__aenter__()
    try:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for zk in clients:
                tg.start_soon(contender, zk)
            await done.wait()
            took = time.perf_counter() - started
            tg.cancel_scope.cancel()
    finally:
        for zk in clients:
            await zk.aclose()
    return waits[:cycles], len(waits) / took


def _kazoo_semaphore(hosts: str, cycles: int) -> tuple[list[float], float]:
    path = f"/bench-kazoo-sem-{uuid.uuid4().hex[:8]}"
    waits: list[float] = []
    stop = threading.Event()
    clients = _kazoo_clients(hosts)

    def contend(client: Any) -> None:
        sem = client.Semaphore(path, max_leases=LEASES)
        while not stop.is_set():
            asked = time.perf_counter()
            if not sem.acquire(timeout=30):
                continue
            waits.append(time.perf_counter() - asked)
            if len(waits) >= cycles:
                stop.set()
            sem.release()

    started = time.perf_counter()
    _run_threads(clients, contend, stop, timeout=300)
    return waits[:cycles], len(waits) / (time.perf_counter() - started)


def _run_threads(clients: list[Any], target: Any, stop: threading.Event, timeout: float) -> None:
    threads = [threading.Thread(target=target, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    stop.wait(timeout)
    stop.set()
    for t in threads:
        t.join(60)
    for c in clients:
        c.stop()
        c.close()


def run(hosts: str, *, quick: bool) -> dict[str, Any]:
    rounds = 30 if quick else 300
    out: dict[str, Any] = {"contenders": CONTENDERS, "leases": LEASES}
    out["lock"] = {
        "aiocoord": latency(
            anyio.run(_aiocoord_lock, hosts, rounds, backend_options={"use_uvloop": True})
        ),
        "kazoo": latency(_kazoo_lock(hosts, rounds)),
    }
    ours, ours_rate = anyio.run(
        _aiocoord_semaphore, hosts, rounds, backend_options={"use_uvloop": True}
    )
    theirs, their_rate = _kazoo_semaphore(hosts, rounds)
    out["semaphore"] = {
        "aiocoord": {**latency(ours), "cycles_per_s": ours_rate},
        "kazoo": {**latency(theirs), "cycles_per_s": their_rate},
    }
    return out


def print_table(result: dict[str, Any]) -> None:
    print()
    print(
        f"Lock and semaphore, {result['contenders']} contenders (one session each); "
        "ratio = kazoo / aiocoord (higher: aiocoord faster)"
    )
    lock, sem = result["lock"], result["semaphore"]
    a, k = lock["aiocoord"], lock["kazoo"]
    print(f"{'':<34}{'aiocoord':>22}{'kazoo':>22}{'ratio':>8}")
    print(
        f"{'lock handover p50 / p99':<34}"
        f"{a['p50_ms']:>11.2f} /{a['p99_ms']:>6.2f} ms"
        f"{k['p50_ms']:>11.2f} /{k['p99_ms']:>6.2f} ms"
        f"{k['p50_ms'] / a['p50_ms']:>7.1f}x"
    )
    a, k = sem["aiocoord"], sem["kazoo"]
    print(
        f"{'semaphore (' + str(result['leases']) + ' leases) cycles/s':<34}"
        f"{a['cycles_per_s']:>19,.0f} /s{k['cycles_per_s']:>19,.0f} /s"
        f"{a['cycles_per_s'] / k['cycles_per_s']:>7.1f}x"
    )
    print(
        f"{'semaphore acquire p50 / p99':<34}"
        f"{a['p50_ms']:>11.2f} /{a['p99_ms']:>6.2f} ms"
        f"{k['p50_ms']:>11.2f} /{k['p99_ms']:>6.2f} ms"
        f"{k['p50_ms'] / a['p50_ms']:>7.1f}x"
    )
