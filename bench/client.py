"""One client library, one process: get / set / create throughput and CPU per request.

Run as ``python -m bench.client --lib aiocoord|kazoo|aiozk --hosts H``; prints one JSON object.
``--tls-ca`` (with ``--tls-cert``/``--tls-key`` for mutual TLS): aiocoord over TLS.
Each library runs in its own process so that process CPU time is that library's alone (kazoo's
I/O thread included). "in flight" is a sliding window: a new request goes out as one completes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

PAYLOAD = b"x" * 100
OPS = ("get", "set", "create")


def _summary(
    op: str, inflight: int, n: int, wall: float, cpu: float, lat: list[float]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "op": op,
        "inflight": inflight,
        "n": n,
        "ops_per_s": n / wall,
        "cpu_us_per_op": cpu / n * 1e6,
    }
    if lat:
        lat.sort()
        row["p50_ms"] = statistics.median(lat) * 1000
        row["p99_ms"] = lat[int(len(lat) * 0.99) - 1] * 1000
    return row


async def _async_bench(
    call: Callable[[str, int], Awaitable[object]], op: str, inflight: int, n: int
) -> dict[str, Any]:
    lat: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call(op, i)
            if inflight == 1:
                lat.append(time.perf_counter() - t0)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return _summary(op, inflight, n, time.perf_counter() - wall0, time.process_time() - cpu0, lat)


async def bench_aiocoord(
    hosts: str, root: str, plan: list[tuple[str, int, int]], context: ssl.SSLContext | None = None
) -> list[dict[str, Any]]:
    import aiocoord

    async with aiocoord.Client(hosts, ssl=context) as zk:
        await zk.ensure_path(root)
        await zk.create(f"{root}/node", PAYLOAD)

        async def call(op: str, i: int) -> object:
            if op == "get":
                return await zk.get(f"{root}/node")
            if op == "set":
                return await zk.set(f"{root}/node", PAYLOAD)
            return await zk.create(f"{root}/c-", PAYLOAD, sequential=True)

        rows = [await _async_bench(call, op, k, n) for op, k, n in plan]
        await zk.delete(root, recursive=True)
    return rows


async def bench_aiozk(
    hosts: str, root: str, plan: list[tuple[str, int, int]]
) -> list[dict[str, Any]]:
    from aiozk import ZKClient

    zk = ZKClient(hosts, session_timeout=10)
    await zk.start()
    try:
        await zk.ensure_path(root)
        await zk.create(f"{root}/node", PAYLOAD)

        async def call(op: str, i: int) -> object:
            if op == "get":
                return await zk.get(f"{root}/node")
            if op == "set":
                return await zk.set(f"{root}/node", PAYLOAD, -1)
            return await zk.create(f"{root}/c-", PAYLOAD, sequential=True)

        rows = [await _async_bench(call, op, k, n) for op, k, n in plan]
        await zk.deleteall(root)
    finally:
        await zk.close()
    return rows


class _KazooWindow:
    """A sliding window over kazoo's async API: each completion issues the next request."""

    def __init__(self, issue: Callable[[], Any], n: int, *, record: bool) -> None:
        self.issue, self.n, self.record = issue, n, record
        self.latencies: list[float] = []
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._issued = self._completed = 0

    def launch(self) -> None:
        with self._lock:
            if self._issued >= self.n:
                return
            self._issued += 1
        t0 = time.perf_counter()
        self.issue().rawlink(lambda res: self._finished(res, t0))

    def _finished(self, result: Any, t0: float) -> None:
        result.get()  # raises the request's error, if any
        if self.record:
            self.latencies.append(time.perf_counter() - t0)
        with self._lock:
            self._completed += 1
            last = self._completed == self.n
        if last:
            self.done.set()
        else:
            self.launch()


def bench_kazoo(hosts: str, root: str, plan: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=hosts, timeout=10)
    zk.start(timeout=15)
    zk.ensure_path(root)
    zk.create(f"{root}/node", PAYLOAD)

    def issue(op: str) -> Any:
        if op == "get":
            return zk.get_async(f"{root}/node")
        if op == "set":
            return zk.set_async(f"{root}/node", PAYLOAD)
        return zk.create_async(f"{root}/c-", PAYLOAD, sequence=True)

    rows = []
    for op, inflight, n in plan:
        window = _KazooWindow(lambda op=op: issue(op), n, record=inflight == 1)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(inflight):
            window.launch()
        if not window.done.wait(300):
            raise TimeoutError(f"kazoo {op} x{n} did not finish")
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rows.append(_summary(op, inflight, n, wall, cpu, window.latencies))
    zk.delete(root, recursive=True)
    zk.stop()
    zk.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lib", choices=["aiocoord", "kazoo", "aiozk"], required=True)
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--n1", type=int, default=2000, help="requests per op, 1 in flight")
    parser.add_argument("--n100", type=int, default=10000, help="requests per op, 100 in flight")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--tls-ca", help="aiocoord only: connect with TLS, trusting this CA")
    parser.add_argument("--tls-cert", help="the client certificate (mutual TLS)")
    parser.add_argument("--tls-key", help="the client certificate's key")
    args = parser.parse_args()
    context = None
    if args.tls_ca:
        if args.lib != "aiocoord":
            parser.error("--tls-ca is for --lib aiocoord")
        from aiocoord import tls_context

        context = tls_context(args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    plan = [(op, 1, args.n1) for op in OPS] + [(op, 100, args.n100) for op in OPS]
    root = f"/bench-client-{uuid.uuid4().hex[:8]}"
    if args.lib == "kazoo":
        rows = bench_kazoo(args.hosts, root, plan)
    else:
        if args.lib == "aiocoord":
            run = bench_aiocoord(args.hosts, root, plan, context)
        else:
            run = bench_aiozk(args.hosts, root, plan)
        if args.loop == "uvloop":
            import uvloop

            rows = uvloop.run(run)
        else:
            rows = asyncio.run(run)
    loop = "threads" if args.lib == "kazoo" else args.loop
    print(json.dumps({"lib": args.lib, "loop": loop, "tls": context is not None, "rows": rows}))


if __name__ == "__main__":
    main()
