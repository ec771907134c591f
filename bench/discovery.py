"""Discovery: cache convergence after a register / deregister (p50/p99) and picks per second,
aiocoord's watch-fed ``ServiceCache`` beside two kazoo baselines on the same server: one that
caches children with ChildrenWatch, one that lists children (and reads one) on every lookup."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import anyio
from kazoo.client import KazooClient

import aiocoord

from .stats import latency


def _rate(pick: Any, seconds: float) -> float:
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            pick()
        count += 100
    return count / elapsed


async def _aiocoord(hosts: str, rounds: int, seconds: float) -> dict[str, Any]:
    base = f"/bench-discovery-{uuid.uuid4().hex[:8]}"
    up: list[float] = []
    down: list[float] = []
    async with aiocoord.Client(hosts) as owner, aiocoord.Client(hosts) as reader:
        registry = aiocoord.ServiceRegistry(owner, base)
        async with (
            registry.register("svc", "10.0.0.1", 1, instance_id="fixed"),
            aiocoord.ServiceRegistry(reader, base).discovery("svc") as cache,
        ):
            changes = cache.changes()
            for r in range(rounds):
                started = time.perf_counter()
                async with registry.register("svc", "10.0.0.2", 2, instance_id=f"i{r}"):
                    while (await changes.__anext__()).kind != "added":
                        pass
                    up.append(time.perf_counter() - started)
                    started = time.perf_counter()
                while (await changes.__anext__()).kind != "removed":
                    pass
                down.append(time.perf_counter() - started)
            picks = _rate(cache.pick, seconds)
    return {"register": latency(up), "deregister": latency(down), "picks_per_s": picks}


def _kazoo(hosts: str, rounds: int, seconds: float) -> dict[str, Any]:
    base = f"/bench-discovery-{uuid.uuid4().hex[:8]}/svc"
    owner, reader = KazooClient(hosts=hosts), KazooClient(hosts=hosts)
    owner.start(timeout=30)
    reader.start(timeout=30)
    up: list[float] = []
    down: list[float] = []
    cached: list[str] = []
    changed = threading.Condition()
    try:
        owner.create(f"{base}/fixed", b'["10.0.0.1", "1"]', ephemeral=True, makepath=True)

        def on_children(children: list[str]) -> None:
            with changed:
                cached[:] = children
                changed.notify_all()

        reader.ChildrenWatch(base, on_children)

        def wait(predicate: Any) -> None:
            with changed:
                if not changed.wait_for(predicate, timeout=30):
                    raise TimeoutError("kazoo ChildrenWatch did not converge")

        for r in range(rounds):
            name = f"i{r}"
            started = time.perf_counter()
            owner.create(f"{base}/{name}", b'["10.0.0.2", "2"]', ephemeral=True)
            wait(lambda name=name: name in cached)
            up.append(time.perf_counter() - started)
            started = time.perf_counter()
            owner.delete(f"{base}/{name}")
            wait(lambda name=name: name not in cached)
            down.append(time.perf_counter() - started)

        def cached_pick() -> str:
            return random.choice(cached)

        def listing_pick() -> bytes:
            child = random.choice(reader.get_children(base))
            return reader.get(f"{base}/{child}")[0]  # type: ignore[no-any-return]

        return {
            "register": latency(up),
            "deregister": latency(down),
            "picks_per_s": _rate(cached_pick, seconds),
            "listing_picks_per_s": _rate(listing_pick, seconds / 2),
        }
    finally:
        for client in (owner, reader):
            client.stop()
            client.close()


def run(hosts: str, *, quick: bool = False) -> dict[str, Any]:
    rounds, seconds = (10, 0.5) if quick else (100, 2.0)
    print("  discovery convergence and picks ...", flush=True)
    kazoo = _kazoo(hosts, rounds, seconds)
    ours = anyio.run(_aiocoord, hosts, rounds, seconds, backend_options={"use_uvloop": True})
    return {"rounds": rounds, "aiocoord": ours, "kazoo": kazoo}


def print_table(results: dict[str, Any]) -> None:
    a, k = results["aiocoord"], results["kazoo"]
    print()
    print(
        f"Discovery: cache convergence over {results['rounds']} rounds, p50 / p99 ms "
        "(aiocoord ServiceCache vs kazoo ChildrenWatch)"
    )
    print(f"{'':<12}{'aiocoord':>17}{'kazoo':>20}{'ratio p50/p99':>16}")
    for what in ("register", "deregister"):
        ours, theirs = a[what], k[what]
        print(
            f"{what:<12}{ours['p50_ms']:>9.2f} /{ours['p99_ms']:>7.2f}"
            f"{theirs['p50_ms']:>12.2f} /{theirs['p99_ms']:>7.2f}"
            f"{theirs['p50_ms'] / ours['p50_ms']:>9.1f}x / {theirs['p99_ms'] / ours['p99_ms']:.1f}x"
        )
    print(
        f"picks/s: aiocoord {a['picks_per_s']:,.0f}; kazoo ChildrenWatch cache "
        f"{k['picks_per_s']:,.0f} (names only); kazoo list-on-lookup "
        f"{k['listing_picks_per_s']:,.0f} ({a['picks_per_s'] / k['listing_picks_per_s']:,.0f}x)"
    )
