"""discovery: registrants (``aiocoord register``) whose health check (a file the controller
removes and puts back) flaps, and watchers whose ServiceCache journals every change of what it
holds. Registrants get every client fault; the watchers only the members' faults, and their own
disconnections extend their deadlines.

Checker:
- an instance whose process was killed (-9) leaves every watcher's cache within session timeout
  + 1 tick + 1 s (plus the time the watcher itself was disconnected meanwhile);
- an instance whose check kept failing leaves every cache within session timeout + 1 tick + 1 s
  + one check interval and check timeout (checked for the failures that lasted that long);
- once the faults are healed and every check passes, every live instance is in every cache.
Recovery: the worst time an instance took to leave a cache after its kill or failed check.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiocoord import Client

from ..cluster import Link
from ..history import Entry, Recorder
from ..procs import SERVICE, SERVICES
from .base import NO_EXPIRY, Report, Workload

REGISTRANTS = 4
WATCHERS = 2
INTERVAL = 0.5
CHECK_TIMEOUT = 1.0


class DiscoveryWorkload(Workload):
    name = "discovery"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.health = self.ctx.rundir / "health"
        self.outages: list[tuple[float, float]] = []

    async def setup(self, zk: Client) -> None:
        await zk.ensure_path(f"{SERVICES}/{SERVICE}")
        self.health.mkdir(exist_ok=True)
        for i in range(REGISTRANTS):
            (self.health / f"web{i}").touch()

    def start(self) -> None:
        for i in range(REGISTRANTS):
            self.ctx.spawn(f"web{i}", functools.partial(self._registrant, i), kinds=NO_EXPIRY)
        for i in range(WATCHERS):
            name = f"watcher{i}"
            self.ctx.spawn(name, functools.partial(self._watcher, name), kinds=())

    def _watcher(self, name: str, link: Link, incarnation: int) -> list[str]:
        return self.ctx.program("watcher", name, link)

    def _registrant(self, i: int, link: Link, incarnation: int) -> list[str]:
        return self.ctx.aiocoord(
            link, "register", "--path", SERVICES, "--service", SERVICE, "--id", f"web{i}",
            "--address", "127.0.0.1", "--port", str(9000 + i),
            "--payload", json.dumps({"incarnation": incarnation}),
            "--check", f"cmd:test -f {self.health / f'web{i}'}",
            "--interval", str(INTERVAL), "--check-timeout", str(CHECK_TIMEOUT),
            "--fall", "1", "--rise", "1",
        )  # fmt: skip

    @property
    def kill_bound(self) -> float:
        return self.ctx.session_timeout + self.ctx.tick + 1.0

    @property
    def check_bound(self) -> float:
        return self.kill_bound + INTERVAL + CHECK_TIMEOUT

    async def drive(self, until: float) -> None:
        """Fail one registrant's check at a time, for 1 to 2 check bounds."""
        rec = Recorder(self.ctx.rundir / "history" / "health.1.jsonl", "health.1")
        rng = random.Random(f"discovery-{self.ctx.seed}")
        while time.monotonic() < until - 2 * self.check_bound:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            name = f"web{rng.randrange(REGISTRANTS)}"
            (self.health / name).unlink()
            rec.event("unhealthy", target=name)
            await asyncio.sleep(rng.uniform(0.5, 2.0) * self.check_bound)
            (self.health / name).touch()
            rec.event("healthy", target=name)

    def expected(self) -> list[str]:
        return sorted(f"web{i}:{self.ctx.procs[f'web{i}'].incarnation}" for i in range(REGISTRANTS))

    async def final(self, zk: Client) -> dict[str, Any]:
        return {"expected": self.expected(), "registered": sorted(await zk.children(
            f"{SERVICES}/{SERVICE}"))}  # fmt: skip

    def check(self, entries: list[Entry], faults: list[Entry], final: Any) -> Report:
        report = Report(self.name)
        views: dict[str, list[tuple[float, set[str]]]] = defaultdict(list)
        suspended: dict[str, list[tuple[float, float]]] = defaultdict(list)
        down_since: dict[str, float] = {}
        for e in entries:
            watcher = e["process"].split(".")[0]
            if e["f"] == "view":
                views[watcher].append((e["t"], set(e["instances"])))
                report.count("cache change", "ok")
            elif e["f"] == "session":
                if e["state"] == "SUSPENDED":
                    down_since.setdefault(watcher, e["t"])
                elif watcher in down_since:
                    suspended[watcher].append((down_since.pop(watcher), e["t"]))
        for watcher, t in down_since.items():
            suspended[watcher].append((t, float("inf")))
        self.outages = _leader_outages(faults)
        # killed incarnations must leave: "webI:N" must be gone within the bound
        for e in faults:
            if e["f"] == "start" and e["kind"] == "proc-kill" and e["target"].startswith("web"):
                instance = f"{e['target']}:{e['incarnation']}"
                self._leaves(
                    report, views, suspended, instance.__eq__, e["t"], self.kill_bound, "kill"
                )
        # failed checks that lasted the whole bound: the id (any incarnation) must leave
        health = [e for e in entries if e["process"].startswith("health.")]
        for e in health:
            if e["f"] != "unhealthy":
                continue
            back = next(
                (h["t"] for h in health if h["f"] == "healthy" and h["t"] > e["t"]
                 and h["target"] == e["target"]), float("inf"))  # fmt: skip
            if back - e["t"] < self.check_bound:
                continue
            report.count("check failure", "ok")
            of_target = functools.partial(_of, e["target"])
            self._leaves(
                report, views, suspended, of_target, e["t"], self.check_bound, "failed check"
            )
        for watcher, seen in views.items():
            last = sorted(seen[-1][1]) if seen else []
            if last != final["expected"]:
                report.violation(
                    f"{watcher} ends with {last}, not every live instance {final['expected']}"
                )
        if final["registered"] != sorted(x.split(":")[0] for x in final["expected"]):
            report.violation(f"registered at the end: {final['registered']}")
        return report

    def _leaves(
        self,
        report: Report,
        views: dict[str, list[tuple[float, set[str]]]],
        suspended: dict[str, list[tuple[float, float]]],
        matches: Callable[[str], bool],
        since: float,
        bound: float,
        why: str,
    ) -> None:
        for watcher, seen in views.items():
            before = [s for t, s in seen if t <= since]
            if not before or not any(map(matches, before[-1])):
                continue  # not in this cache when it happened
            gone = next(
                (t for t, s in seen if t > since and not any(map(matches, s))), float("inf")
            )
            away = sum(
                max(0.0, min(hi, gone) - max(lo, since)) for lo, hi in suspended.get(watcher, [])
            )
            # while the quorum has no leader nothing can be deleted, and the new leader
            # restarts every session's expiry timer: the bound runs again from its election
            start = since
            for lost, elected in self.outages:
                if lost <= start + away + bound and elected >= start:
                    start = max(start, elected)
            late = gone - start - away
            if late > bound:
                instance = next(x for x in before[-1] if matches(x))
                report.violation(
                    f"{instance} stayed in {watcher} for {late:.2f} s "
                    f"after its {why} at {since:.2f} (bound {bound:.2f} s)"
                )
            else:
                report.worst(f"discovery: leave after {why}", late)


def _of(target: str, instance: str) -> bool:
    """Whether ``instance`` (``id:incarnation``) is one of ``target``'s incarnations."""
    return instance.split(":")[0] == target


def _leader_outages(faults: list[Entry]) -> list[tuple[float, float]]:
    """When the quorum had no leader: from a fault on the leader to the next leader's election."""
    outages = []
    started: dict[tuple[str, str], float] = {}
    for e in faults:
        key = (e.get("kind", ""), e.get("target", ""))
        if e["f"] == "start" and e.get("leader"):
            started[key] = e["t"]
        elif e["f"] == "leader-elected" and key in started:
            outages.append((started.pop(key), e["t"]))
    return outages
