"""tasks: a submitter process queues tasks with unique payloads while two dispatchers (one
active) and three workers (``aiocoord dispatcher``/``worker``) are hit by faults; the workers'
handler journals each execution's start and end and returns which execution produced it.

Checker, once the faults have healed and the queue has drained:
- every acknowledged submission ends done or dead; no payload is queued twice (a lost submit
  reply is resolved by its marker, never by a second task);
- exactly one result per task, and it names an execution that ran to its end;
- no result from a worker the task had been moved from: the execution that produced the result
  started after every recorded loss of that worker for that task (``error-*`` nodes saying
  "worker W lost", stamped by the server's clock, which is this machine's);
- at quiescence no task is both queued (no status) and assigned, and every assignment's task is
  in state ``schedule``.
Recovery: the worst time from a worker's kill -9 to the next start of a task it was running.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections import defaultdict
from typing import Any

from aiocoord import Client, NoNode

from ..cluster import Link
from ..history import Entry, operations, outcome
from ..procs import TASKS_ROOT
from .base import ALL_CLIENT_FAULTS, Report, Workload

WORKERS = 3
DISPATCHERS = 2
LOST = re.compile(r"worker (\S+) lost")


class TasksWorkload(Workload):
    name = "tasks"

    async def setup(self, zk: Client) -> None:
        await zk.ensure_path(TASKS_ROOT)

    def start(self) -> None:
        for i in range(DISPATCHERS):
            name = f"dispatcher{i}"
            self.ctx.spawn(name, functools.partial(self._dispatcher, name))
        for i in range(WORKERS):
            name = f"worker{i}"
            self.ctx.spawn(name, functools.partial(self._worker, name))
        self.ctx.spawn(
            "submitter",
            lambda link, inc: self.ctx.program("submitter", "submitter", link),
            kinds=ALL_CLIENT_FAULTS,
            expirable=True,
        )

    def _dispatcher(self, name: str, link: Link, incarnation: int) -> list[str]:
        return self.ctx.aiocoord(
            link, "dispatcher", "--path", TASKS_ROOT, "--id", name,
            "--max-attempts", "6", "--retry-delay", "0.2", "--max-retry-delay", "1",
        )  # fmt: skip

    def _worker(self, name: str, link: Link, incarnation: int) -> list[str]:
        return self.ctx.aiocoord(
            link, "worker", "--path", TASKS_ROOT, "--id", name, "--concurrency", "3",
            "--handler", "chaos.procs:task_handler", "--grace", "1",
        )  # fmt: skip

    async def settle(self, deadline: float) -> None:
        """Stop submitting (the submitter is stopped) and wait for the queue to drain."""
        submitter = self.ctx.procs["submitter"]
        await asyncio.to_thread(submitter.stop, 5.0)
        async with self.ctx.client() as zk:
            while time.monotonic() < deadline + 60:
                if await self._drained(zk):
                    return
                await asyncio.sleep(0.5)

    async def _drained(self, zk: Client) -> bool:
        for task in await zk.children(f"{TASKS_ROOT}/tasks"):
            try:
                status, _ = await zk.get(f"{TASKS_ROOT}/tasks/{task}/status")
            except NoNode:
                return False
            if status not in (b"done", b"dead", b"cancelled"):
                return False
        return True

    async def final(self, zk: Client) -> dict[str, Any]:
        tasks: dict[str, dict[str, Any]] = {}
        for task in await zk.children(f"{TASKS_ROOT}/tasks"):
            path = f"{TASKS_ROOT}/tasks/{task}"
            try:
                payload, _ = await zk.get(path)
                children = await zk.children(path)
            except NoNode:
                continue
            record: dict[str, Any] = {"payload": payload.decode(), "errors": []}
            for child in sorted(children):
                data, stat = await zk.get(f"{path}/{child}")
                if child == "status":
                    record["status"] = data.decode()
                elif child == "result":
                    record["result"] = json.loads(data)
                elif child.startswith("error-"):
                    record["errors"].append((data.decode(errors="replace"), stat.ctime / 1000))
            tasks[task] = record
        assigned: dict[str, list[str]] = {}
        for worker in await zk.children(f"{TASKS_ROOT}/assign"):
            assigned[worker] = await zk.children(f"{TASKS_ROOT}/assign/{worker}")
        return {"tasks": tasks, "assigned": assigned}

    def check(self, entries: list[Entry], faults: list[Entry], final: Any) -> Report:
        report = Report(self.name)
        tasks: dict[str, dict[str, Any]] = final["tasks"]
        by_payload: dict[str, list[str]] = defaultdict(list)
        for task, record in tasks.items():
            by_payload[record["payload"]].append(task)
        for payload, ids in by_payload.items():
            if len(ids) > 1:
                report.violation(f"submission {payload} queued {len(ids)} times: {ids}")
        for invoke, completion in operations(entries, "submit"):
            result = outcome(completion)
            report.count("submit", result)
            ids = by_payload.get(invoke["uid"], [])
            if result == "ok":
                assert completion is not None
                acked = completion["task"]
                if acked not in tasks:
                    report.violation(f"acknowledged task {acked} ({invoke['uid']}) is missing")
            elif result == "fail" and ids:
                report.violation(f"failed submission {invoke['uid']} was queued as {ids}")
        for task, record in tasks.items():
            status = record.get("status")
            # done is the ok outcome of a task, dead its failure; anything else is unfinished
            report.count("task", {"done": "ok", "dead": "fail"}.get(status or "", "info"))
            if status not in ("done", "dead"):
                report.violation(f"task {task} ended {status or 'pending'}, not done or dead")
        starts: dict[str, Entry] = {}
        ends: set[str] = set()
        for e in entries:
            if e["f"] == "exec-start":
                starts[e["execution"]] = e
            elif e["f"] == "exec-end":
                ends.add(e["execution"])
        report.ops["execution ok"] = len(ends)
        report.ops["execution info"] = len(starts) - len(ends)
        for task, record in tasks.items():
            produced = record.get("result")
            if record.get("status") == "done" and produced is None:
                report.violation(f"task {task} is done without a result")
            if produced is None:
                continue
            execution = produced["execution"]
            if produced["payload"] != record["payload"]:
                report.violation(f"task {task}'s result is another task's: {produced}")
            if execution not in ends:
                report.violation(f"task {task}'s result names {execution}, never finished")
                continue
            start = starts[execution]
            for text, when in record["errors"]:
                lost = LOST.search(text)
                if lost and lost.group(1) == start["worker"] and start["t"] < when:
                    report.violation(
                        f"task {task}: result from {execution}, which started at "
                        f"{start['t']:.2f} on {start['worker']}, moved away at {when:.2f}"
                    )
        for worker, listing in final["assigned"].items():
            for task in listing:
                status = tasks.get(task, {}).get("status")
                if status != "schedule":
                    report.violation(
                        f"task {task} still assigned to {worker} at quiescence ({status})"
                    )
        self._reassignment(report, entries, faults)
        return report

    def _reassignment(self, report: Report, entries: list[Entry], faults: list[Entry]) -> None:
        kills = [
            (e["t"], e["target"])
            for e in faults
            if e["f"] == "start" and e["kind"] == "proc-kill" and e["target"].startswith("worker")
        ]
        execs = [e for e in entries if e["f"] in ("exec-start", "exec-end")]
        for killed_at, worker in kills:
            running: set[str] = set()
            for e in execs:
                if e["t"] > killed_at:
                    break
                if e["process"].startswith(f"{worker}."):
                    if e["f"] == "exec-start":
                        running.add(e["task"])
                    else:
                        running.discard(e["task"])
            for task in running:
                again = next(
                    (
                        e["t"]
                        for e in execs
                        if e["f"] == "exec-start" and e["task"] == task and e["t"] > killed_at
                    ),
                    None,
                )
                if again is not None:
                    report.worst("task reassignment after kill -9", again - killed_at)
