"""lock and semaphore: processes taking a ``Lock`` (or a lease of a 2-lease ``Semaphore``) again
and again, each hold making a few writes through ``hold.guard`` while their links are cut and
stalled, their sessions expired, they are paused and killed.

The checkers use only what the server ordered (zxids), never clocks. A hold's token is its node's
czxid; an acknowledged guarded write at mzxid ``m`` proves that node existed at ``m``, and a node
(one czxid) exists over one interval of zxids.
- lock: acknowledged guarded writes, in the order the server applied them, carry tokens that
  never decrease. A write of token ``b`` at ``m`` followed by one of an older token ``a < b`` at
  ``m' > m`` means ``a``'s node, ahead of ``b``'s in the queue, existed at ``m`` (it existed from
  ``a`` to ``m'``): ``b`` wrote as the holder while it was not;
- semaphore: the intervals from each lease's czxid to its last acknowledged guarded write never
  overlap more than ``LEASES`` at once (each lease node existed over its whole interval);
- after the faults heal, guarded writes succeed again (liveness).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from typing import Any

from aiocoord import Client

from ..cluster import Link
from ..history import Entry, Write, operations, outcome, tokens_going_back
from ..procs import LOCK_DATA, LOCK_ROOT, SEMAPHORE_DATA, SEMAPHORE_ROOT
from .base import ALL_CLIENT_FAULTS, Report, Workload

HOLDERS = 3
LEASES = 2
#: the last acknowledged guarded write comes at most this long before the final check
LIVENESS = 3.0


class LockWorkload(Workload):
    name = "lock"
    root, data, leases = LOCK_ROOT, LOCK_DATA, 0

    async def setup(self, zk: Client) -> None:
        await zk.ensure_path(self.root)
        await zk.ensure_path(self.data)

    def start(self) -> None:
        for i in range(HOLDERS):
            name = f"{self.name}{i}"
            self.ctx.spawn(
                name, functools.partial(self._argv, name), kinds=ALL_CLIENT_FAULTS, expirable=True
            )

    def _argv(self, name: str, link: Link, incarnation: int) -> list[str]:
        return self.ctx.program("locker", name, link, "--leases", str(self.leases))

    async def final(self, zk: Client) -> dict[str, Any]:
        return {"checked_at": time.time()}

    def check(self, entries: list[Entry], faults: list[Entry], final: Any) -> Report:
        report = Report(self.name)
        writes: list[Write] = []  # the acknowledged guarded writes
        last_ok = 0.0
        for invoke, completion in operations(entries, "guarded-write"):
            if not invoke["process"].startswith(self.name):
                continue
            result = outcome(completion)
            report.count("guarded-write", result)
            if completion is not None and result == "ok":
                writes.append((completion["mzxid"], invoke["token"], invoke["process"]))
                last_ok = max(last_ok, completion["t"])
        for e in entries:
            if e["f"] == "hold" and e["process"].startswith(self.name):
                report.count("hold", "ok")
        self.safety(writes, report)
        if final is None or last_ok < final["checked_at"] - LIVENESS:
            report.violation("no guarded write succeeded once the faults had healed")
        return report

    def safety(self, writes: list[Write], report: Report) -> None:
        for (zxid, newer, by), (mzxid, token, process) in tokens_going_back(writes):
            report.violation(
                f"two holders: token {newer:#x} ({by}) wrote at zxid {zxid:#x} while the older "
                f"hold {token:#x} ({process}), which wrote at {mzxid:#x}, still existed"
            )


class SemaphoreWorkload(LockWorkload):
    name = "semaphore"
    root, data, leases = SEMAPHORE_ROOT, SEMAPHORE_DATA, LEASES

    def safety(self, writes: list[Write], report: Report) -> None:
        last: dict[int, int] = {}
        owner: dict[int, str] = {}
        for mzxid, token, process in writes:
            last[token] = max(last.get(token, 0), mzxid)
            owner[token] = process
        # a sweep over the zxids: +1 where a lease node was made, -1 just after its last write
        steps = Counter[int]()
        for token, end in last.items():
            steps[token] += 1
            steps[end + 1] -= 1
        count = worst = 0
        for zxid in sorted(steps):
            count += steps[zxid]
            worst = max(worst, count)
            if count > self.leases:
                held = sorted(t for t, end in last.items() if t <= zxid <= end)
                report.violation(
                    f"{count} leases held at zxid {zxid:#x} (at most {self.leases}): "
                    + ", ".join(f"{t:#x} ({owner[t]})" for t in held)
                )
                break
        report.notes.append(f"at most {worst} leases seen held at once")
