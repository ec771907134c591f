"""election: `aiocoord elect` runners whose CMD journals its term (token, start, a beat every
0.1 s, stop) and makes writes fenced by its candidate node.

Checker:
- no two CMDs run at once, beyond the documented exception: a runner that is paused (SIGSTOP)
  cannot stop its CMD, so a standby's CMD may start while the paused runner's still runs. The
  end of a term is its last journal line, at most 0.1 s before the CMD really ended: an overlap
  found is real;
- no fenced write of a deposed term succeeds: the acknowledged fenced writes, in the order the
  server applied them (their mzxid), carry tokens that never decrease;
- tokens only increase: each term starts with a token at least as great as every earlier one;
- after the faults heal, a leader runs (liveness).
Recovery: the worst leader handover, from the end of one term to the start of the next.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiocoord import Client

from ..cluster import Link
from ..history import Entry, operations, outcome, tokens_going_back
from ..procs import ELECTION_DATA
from .base import Report, Workload

RUNNERS = 3
ELECTION = "/chaos/election"


@dataclass
class Term:
    process: str
    runner: str
    token: int
    start: float
    end: float


class ElectionWorkload(Workload):
    name = "election"

    async def setup(self, zk: Client) -> None:
        await zk.ensure_path(ELECTION)
        await zk.ensure_path(ELECTION_DATA)

    def start(self) -> None:
        for i in range(RUNNERS):
            name = f"runner{i}"
            self.ctx.spawn(name, functools.partial(self._argv, name))

    def _argv(self, name: str, link: Link, incarnation: int) -> list[str]:
        cmd = self.ctx.program("leader", name, link)
        return self.ctx.aiocoord(link, "elect", "--path", ELECTION, "--id", name, "--", *cmd)

    def terms(self, entries: list[Entry]) -> list[Term]:
        journal: dict[str, list[Entry]] = defaultdict(list)
        for e in entries:
            if "-cmd" in e["process"] and e["process"].startswith("runner"):
                journal[e["process"]].append(e)
        terms = []
        for process, lines in journal.items():
            start = next((e for e in lines if e["f"] == "start"), None)
            if start is None:
                continue
            terms.append(Term(process, start["runner"], start["token"], start["t"], lines[-1]["t"]))
        terms.sort(key=lambda term: term.start)
        return terms

    def check(self, entries: list[Entry], faults: list[Entry], final: Any) -> Report:
        report = Report(self.name)
        terms = self.terms(entries)
        paused = _paused_intervals(faults)
        for i, a in enumerate(terms):
            for b in terms[i + 1 :]:
                if b.start >= a.end or a.runner == b.runner:
                    continue
                if any(lo <= b.start and hi >= a.start for lo, hi in paused.get(a.runner, [])):
                    report.notes.append(
                        f"{a.runner}'s CMD ran {a.end - b.start:.2f} s into {b.runner}'s term "
                        "while it was paused (documented)"
                    )
                    continue
                report.violation(
                    f"two CMDs at once: {a.runner} (token {a.token}) ran {a.end - b.start:.2f} s "
                    f"into {b.runner}'s term (token {b.token}) at {b.start:.2f}"
                )
        for earlier, later in itertools.pairwise(terms):
            if later.token < earlier.token:
                report.violation(
                    f"token went back: {later.runner} started with {later.token} after "
                    f"{earlier.runner}'s {earlier.token}"
                )
            report.worst("leader handover", max(0.0, later.start - earlier.end))
        writes = []
        for invoke, completion in operations(entries, "fenced-write"):
            result = outcome(completion)
            report.count("fenced-write", result)
            if completion is not None and result == "ok":
                writes.append((completion["mzxid"], invoke["token"], invoke["process"]))
        for e in entries:
            if e["f"] == "start" and "-cmd" in e["process"]:
                report.count("term started", "ok")
        for (zxid, newer, by), (mzxid, token, process) in tokens_going_back(writes):
            report.violation(
                f"a deposed term wrote: token {token} ({process}) at zxid {mzxid:#x} after "
                f"token {newer} ({by}) wrote at {zxid:#x}"
            )
        if not terms or final is None or terms[-1].end < final["checked_at"] - 2.0:
            report.violation("no leader ran once the faults had healed")
        return report

    async def final(self, zk: Client) -> dict[str, Any]:
        return {"checked_at": time.time()}


def _paused_intervals(faults: list[Entry]) -> dict[str, list[tuple[float, float]]]:
    """When each process was paused (SIGSTOP): from a pause's start to its end."""
    open_at: dict[str, float] = {}
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in faults:
        if not e.get("kind", "").startswith("proc-pause"):
            continue
        if e["f"] == "start":
            open_at[e["target"]] = e["t"]
        elif e["f"] == "end" and e["target"] in open_at:
            spans[e["target"]].append((open_at.pop(e["target"]), e["t"]))
    for target, t in open_at.items():
        spans[target].append((t, float("inf")))
    return spans
