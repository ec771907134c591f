"""session: clients reading and writing their own nodes and a shared one, and making protected
sequential creates, while their links are cut and stalled, their sessions expired, their
members killed.

Checker, per process incarnation (one session after another, one writer per node):
- no time travel: a read never returns less than what this process wrote and had acknowledged
  before the read began, nor less than an earlier read returned; reads of the shared node never
  see an older mzxid than one this process already saw there (across member failover);
- an acknowledged write is present: each node ends on the last acknowledged value or a later
  write whose outcome was unknown, never on anything else;
- a protected create that was acknowledged exists exactly once, one whose outcome was unknown
  at most once, one that failed not at all.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from typing import Any

from aiocoord import Client, NoNode

from ..cluster import Link
from ..history import Entry, operations, outcome
from ..procs import SESSION_ROOT
from .base import ALL_CLIENT_FAULTS, Report, Workload

CLIENTS = 3


class SessionWorkload(Workload):
    name = "session"

    async def setup(self, zk: Client) -> None:
        await zk.ensure_path(SESSION_ROOT)

    def start(self) -> None:
        for i in range(CLIENTS):
            name = f"session{i}"
            self.ctx.spawn(
                name,
                functools.partial(self._argv, name),
                kinds=ALL_CLIENT_FAULTS,
                expirable=True,
            )

    def _argv(self, name: str, link: Link, incarnation: int) -> list[str]:
        return self.ctx.program("session", name, link)

    async def settle(self, deadline: float) -> None:
        """Stop the clients: the final state is read once nothing writes any more."""
        await asyncio.gather(
            *(
                asyncio.to_thread(proc.stop, 5.0)
                for name, proc in self.ctx.procs.items()
                if name.startswith("session")
            )
        )

    async def final(self, zk: Client) -> dict[str, Any]:
        nodes: dict[str, int] = {}
        items: dict[str, list[str]] = {}
        for child in await zk.children(SESSION_ROOT):
            path = f"{SESSION_ROOT}/{child}"
            if child.endswith("-items"):
                datas = []
                for item in await zk.children(path):
                    try:
                        data, _ = await zk.get(f"{path}/{item}")
                    except NoNode:
                        continue
                    datas.append(data.decode())
                items[child.removesuffix("-items")] = datas
            elif child != "shared":
                data, _ = await zk.get(path)
                nodes[child] = int(data or b"0")
        return {"nodes": nodes, "items": items}

    def check(self, entries: list[Entry], faults: list[Entry], final: Any) -> Report:
        report = Report(self.name)
        by_process: dict[str, list[Entry]] = defaultdict(list)
        for e in entries:
            if e["process"].startswith("session"):
                by_process[e["process"]].append(e)
        for process, mine in by_process.items():
            node = process.replace(".", "-")  # session0.2 -> session0-2
            self._process(report, process, mine, final["nodes"].get(node), final["items"])
        return report

    def _process(
        self,
        report: Report,
        process: str,
        mine: list[Entry],
        final_value: int | None,
        items: dict[str, list[str]],
    ) -> None:
        node = process.replace(".", "-")
        acked = 0  # the greatest value this process wrote and saw acknowledged
        seen = 0  # the greatest value a read returned
        shared_seen = 0  # the greatest mzxid of the shared node seen (read or own write)
        acked_at_invoke: dict[int, tuple[int, int]] = {}
        invoked = {e["id"]: e for e in mine if e["type"] == "invoke"}
        possible = {0}  # values the node may hold: acknowledged or unknown writes
        for e in mine:
            if e["type"] == "invoke":
                acked_at_invoke[e["id"]] = (acked, shared_seen)
                continue
            if e["type"] == "event":
                continue
            report.count(e["f"], e["type"])
            floor, shared_floor = acked_at_invoke.get(e["id"], (0, 0))
            if e["f"] == "write" and e["type"] in ("ok", "info"):
                value = int(invoked[e["id"]]["value"])
                possible.add(value)
                if e["type"] == "ok":
                    acked = max(acked, value)
            elif e["f"] == "read" and e["type"] == "ok":
                if e["value"] < floor:
                    report.violation(
                        f"{process}: read {e['value']} after its write of {floor} was "
                        "acknowledged (a read went back in time)"
                    )
                if e["value"] < seen:
                    report.violation(f"{process}: read {e['value']} after reading {seen}")
                seen = max(seen, e["value"])
            elif e["f"] == "write-shared" and e["type"] == "ok":
                shared_seen = max(shared_seen, e["mzxid"])
            elif e["f"] == "read-shared" and e["type"] == "ok":
                if e["mzxid"] < shared_floor:
                    report.violation(
                        f"{process}: read the shared node at zxid {e['mzxid']:#x} after seeing "
                        f"{shared_floor:#x} (time travel across servers)"
                    )
                shared_seen = max(shared_seen, e["mzxid"])
        # writes never completed (the process died) are unknown too
        for invoke, completion in operations(mine, "write"):
            if completion is None:
                possible.add(invoke["value"])
        if final_value is None:
            report.violation(f"{process}: its node {node} is missing")
        else:
            if final_value < acked:
                report.violation(
                    f"{process}: node ends on {final_value}, but {acked} was acknowledged"
                )
            if final_value not in possible:
                report.violation(f"{process}: node ends on {final_value}, never written")
        counts: dict[str, int] = defaultdict(int)
        for data in items.get(node, []):
            counts[data] += 1
        for invoke, completion in operations(mine, "create"):
            n = counts.get(invoke["uid"], 0)
            report.once(f"create {invoke['uid']} of {process}", outcome(completion), n)
