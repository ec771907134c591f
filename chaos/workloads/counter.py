"""counter: processes adding 1 to one shared ``Counter`` while their links are cut and stalled,
their sessions expired, they are paused and killed.

Checker (Jepsen's counter): once every process has stopped, the counter's value lies between the
acknowledged increments and those plus the increments whose outcome is unknown (a lost reply
that could not be settled: ``CounterOutcomeUnknown``, a process killed in flight): none was
counted twice, none acknowledged was lost, none that failed was applied. The value is not below
any value an acknowledged increment left (it only grows), and no two acknowledged increments
left the same value (each read-modify-write applied on the version it read).
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter as Tally
from typing import Any

from aiocoord import Client, Counter

from ..cluster import Link
from ..history import Entry, operations, outcome
from ..procs import COUNTER
from .base import ALL_CLIENT_FAULTS, Report, Workload

CLIENTS = 2


class CounterWorkload(Workload):
    name = "counter"

    async def setup(self, zk: Client) -> None:
        await zk.ensure_path(COUNTER)

    def start(self) -> None:
        for i in range(CLIENTS):
            name = f"counter{i}"
            self.ctx.spawn(
                name, functools.partial(self._argv, name), kinds=ALL_CLIENT_FAULTS, expirable=True
            )

    def _argv(self, name: str, link: Link, incarnation: int) -> list[str]:
        return self.ctx.program("counter", name, link)

    async def settle(self, deadline: float) -> None:
        """Stop the clients: the value is read once nothing changes it any more."""
        await asyncio.gather(
            *(
                asyncio.to_thread(proc.stop, 5.0)
                for name, proc in self.ctx.procs.items()
                if name.startswith("counter")
            )
        )

    async def final(self, zk: Client) -> int:
        return await Counter(zk, COUNTER).value()

    def check(self, entries: list[Entry], faults: list[Entry], final: Any) -> Report:
        report = Report(self.name)
        acknowledged = unknown = 0
        left = Tally[int]()
        for _, completion in operations(entries, "increment"):
            result = outcome(completion)
            report.count("increment", result)
            if result == "ok":
                assert completion is not None
                acknowledged += 1
                left[completion["post"]] += 1
            elif result == "info":
                unknown += 1
        if not acknowledged <= final <= acknowledged + unknown:
            report.violation(
                f"the counter is {final}: {acknowledged} increments were acknowledged and "
                f"{unknown} have an unknown outcome"
            )
        if left and final < max(left):  # increments only: the value never goes down
            report.violation(
                f"the counter is {final}, below {max(left)} that an acknowledged increment left"
            )
        for value, n in sorted(left.items()):
            if n > 1:
                report.violation(f"{n} acknowledged increments each left the value {value}")
        return report
