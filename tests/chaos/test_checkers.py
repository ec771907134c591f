"""The campaign's own parts, without ZooKeeper: the schedule replays from its seed, histories pair
invocations with completions, and every checker reports each kind of violation it exists for
(and none in a clean history)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from chaos import history, schedule
from chaos.workloads import Context
from chaos.workloads.config import ConfigWorkload
from chaos.workloads.counter import CounterWorkload
from chaos.workloads.discovery import DiscoveryWorkload
from chaos.workloads.election import ElectionWorkload
from chaos.workloads.locks import LockWorkload, SemaphoreWorkload
from chaos.workloads.session import SessionWorkload
from chaos.workloads.tasks import TasksWorkload

TARGETS = [
    schedule.Target("a", tuple(schedule.CLIENT_FAULTS)),
    schedule.Target("b", ("link-cut", "proc-kill")),
]


def test_the_same_seed_plans_the_same_faults_and_another_seed_others() -> None:
    one = schedule.plan(7, 600, TARGETS, session_timeout=4.0)
    assert one == schedule.plan(7, 600, TARGETS, session_timeout=4.0)
    assert one != schedule.plan(8, 600, TARGETS, session_timeout=4.0)
    assert {f.kind for f in one} == set(schedule.MEMBER_FAULTS) | set(schedule.CLIENT_FAULTS)


def test_a_plan_keeps_a_quorum_and_hits_targets_only_with_their_kinds() -> None:
    faults = schedule.plan(3, 900, TARGETS, session_timeout=4.0)
    members = [f for f in faults if f.kind in schedule.MEMBER_FAULTS]
    for before, after in itertools.pairwise(members):
        assert after.at >= before.at + before.duration  # one member faulty at a time
    assert all(f.kind in ("link-cut", "proc-kill") for f in faults if f.target == "b")
    assert faults[-1].at < 900 - schedule.WARMUP


def test_histories_pair_invocations_and_a_missing_completion_is_unknown(tmp_path: Path) -> None:
    rec = history.Recorder(tmp_path / "p.1.jsonl", "p.1")
    first = rec.invoke("write", value=1)
    rec.complete("ok", first, "write")
    rec.invoke("write", value=2)  # the process died here
    rec.close()
    with open(tmp_path / "p.1.jsonl", "ab") as torn:
        torn.write(b'{"t": 1, "proc')
    pairs = history.operations(history.read(tmp_path), "write")
    assert [(i["value"], history.outcome(c)) for i, c in pairs] == [(1, "ok"), (2, "info")]


class Log:
    """Builds a history: ``op(...)`` an invocation and its completion, ``event(...)`` a line."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.t = 1000.0
        self.ids = itertools.count(1)

    def at(self, t: float) -> Log:
        self.t = t
        return self

    def op(self, process: str, f: str, kind: str, invoked: dict[str, Any], **done: Any) -> Log:
        n = next(self.ids)
        base = {"process": process, "f": f, "id": n}
        self.entries.append({"t": self.t, "type": "invoke", **base, **invoked})
        self.t += 0.01
        if kind != "none":
            self.entries.append({"t": self.t, "type": kind, **base, **done})
        self.t += 0.01
        return self

    def event(self, process: str, f: str, **value: Any) -> Log:
        self.entries.append({"t": self.t, "type": "event", "process": process, "f": f, **value})
        self.t += 0.01
        return self


def fault(t: float, phase: str, kind: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"t": t, "f": phase, "kind": kind, "target": target, **extra}


# -- election -------------------------------------------------------------------------------------


def term(log: Log, runner: str, token: int, start: float, end: float, pid: int) -> None:
    log.at(start).event(f"{runner}-cmd{pid}.1", "start", token=token, runner=runner)
    log.at(end).event(f"{runner}-cmd{pid}.1", "beat", token=token)


def election(log: Log, faults: list[dict[str, Any]], checked_at: float = 20.0) -> list[str]:
    return (
        ElectionWorkload(None)
        .check(  # type: ignore[arg-type]
            sorted(log.entries, key=lambda e: e["t"]), faults, {"checked_at": checked_at}
        )
        .violations
    )


def test_election_two_cmds_at_once_is_a_violation_unless_the_runner_was_paused() -> None:
    log = Log()
    term(log, "runner0", 10, 1.0, 5.0, 1)
    term(log, "runner1", 20, 4.5, 20.0, 2)
    assert any("two CMDs at once" in v for v in election(log, []))
    paused = [fault(3.0, "start", "proc-pause-long", "runner0"), fault(6, "end", "x", "runner0")]
    paused[1]["kind"] = "proc-pause-long"
    assert election(log, paused) == []


def test_election_a_deposed_term_writing_or_a_token_going_back_is_a_violation() -> None:
    log = Log()
    term(log, "runner0", 10, 1.0, 4.0, 1)
    term(log, "runner1", 20, 4.5, 20.0, 2)
    log.at(5.0).op("runner1-cmd2.1", "fenced-write", "ok", {"token": 20}, mzxid=100)
    log.at(5.1).op("runner0-cmd1.1", "fenced-write", "ok", {"token": 10}, mzxid=101)
    assert any("a deposed term wrote" in v for v in election(log, []))
    log = Log()
    term(log, "runner0", 30, 1.0, 4.0, 1)
    term(log, "runner1", 20, 4.5, 20.0, 2)
    assert any("token went back" in v for v in election(log, []))


def test_election_without_a_leader_at_the_end_is_a_violation() -> None:
    log = Log()
    term(log, "runner0", 10, 1.0, 4.0, 1)
    assert any("no leader" in v for v in election(log, [], checked_at=20.0))
    assert election(log, [], checked_at=5.0) == []


# -- lock and semaphore ---------------------------------------------------------------------------


def guarded(log: Log, process: str, token: int, mzxid: int, kind: str = "ok") -> None:
    log.op(process, "guarded-write", kind, {"token": token}, mzxid=mzxid)


def locks(workload: type[LockWorkload], log: Log, checked_at: float = 1001.0) -> list[str]:
    check = workload(None).check  # type: ignore[arg-type]
    return check(log.entries, [], {"checked_at": checked_at}).violations


def test_lock_a_write_of_a_newer_hold_before_one_of_an_older_hold_is_two_holders() -> None:
    log = Log()
    guarded(log, "lock0.1", 10, 11)
    guarded(log, "lock1.1", 20, 21)
    guarded(log, "lock0.1", 10, 19, kind="fail")  # refused: no proof it existed
    guarded(log, "lock2.1", 30, 31, kind="info")
    assert locks(LockWorkload, log) == []
    guarded(log, "lock0.1", 10, 22)  # hold 10 still existed after hold 20 wrote at 21
    assert any("two holders" in v for v in locks(LockWorkload, log))


def test_semaphore_more_leases_than_allowed_at_one_zxid_is_a_violation() -> None:
    log = Log()
    guarded(log, "semaphore0.1", 10, 15)  # lease 10 held over [10, 15]
    guarded(log, "semaphore1.1", 12, 18)  # lease 12 over [12, 18]
    guarded(log, "semaphore2.1", 16, 20)  # lease 16 over [16, 20]: 12 and 16 overlap, 10 gone
    assert locks(SemaphoreWorkload, log) == []
    guarded(log, "semaphore0.1", 10, 17)  # lease 10 now proved held until 17: three at 16
    violations = locks(SemaphoreWorkload, log)
    assert any("3 leases held at zxid 0x10" in v for v in violations), violations


def test_lock_without_a_guarded_write_at_the_end_is_a_violation() -> None:
    log = Log().at(1000.0)
    guarded(log, "lock0.1", 10, 11)
    assert locks(LockWorkload, log, checked_at=1001.0) == []
    assert any("healed" in v for v in locks(LockWorkload, log, checked_at=1010.0))
    assert any("healed" in v for v in locks(SemaphoreWorkload, log))  # none of its own


# -- counter --------------------------------------------------------------------------------------


def test_counter_the_value_lies_between_the_acknowledged_and_the_unknown_increments() -> None:
    log = Log()
    for post in (1, 2, 3):
        log.op("counter0.1", "increment", "ok", {}, post=post)
    log.op("counter1.1", "increment", "info", {}, error="CounterOutcomeUnknown")
    log.op("counter1.1", "increment", "none", {})  # killed in flight
    log.op("counter1.1", "increment", "fail", {}, error="NoAuth")

    def check(value: int) -> list[str]:
        return CounterWorkload(None).check(log.entries, [], value).violations  # type: ignore[arg-type]

    assert check(3) == [] and check(5) == []
    assert any("acknowledged" in v for v in check(2))  # one acknowledged increment lost
    assert any("unknown" in v for v in check(6))  # one counted twice (or a failed one applied)
    log.op("counter1.1", "increment", "ok", {}, post=3)
    assert any("left the value 3" in v for v in check(4))


# -- session --------------------------------------------------------------------------------------


def session(log: Log, node: int, items: list[str]) -> list[str]:
    final = {"nodes": {"session0-1": node}, "items": {"session0-1": items}}
    return SessionWorkload(None).check(log.entries, [], final).violations  # type: ignore[arg-type]


def test_session_a_clean_history_has_no_violation() -> None:
    log = Log()
    log.op("session0.1", "write", "ok", {"value": 1}, mzxid=5)
    log.op("session0.1", "write", "info", {"value": 2})
    log.op("session0.1", "read", "ok", {}, value=2, mzxid=6)
    log.op("session0.1", "create", "ok", {"uid": "u1"}, path="/x")
    log.op("session0.1", "create", "info", {"uid": "u2"})
    assert session(log, 2, ["u1"]) == []


@pytest.mark.parametrize(
    ("steps", "node", "items", "found"),
    [
        ([("write", "ok", {"value": 3}, {"mzxid": 9}),
          ("read", "ok", {}, {"value": 2, "mzxid": 8})], 3, [], "went back in time"),
        ([("read", "ok", {}, {"value": 4, "mzxid": 8}),
          ("read", "ok", {}, {"value": 3, "mzxid": 7})], 0, [], "after reading 4"),
        ([("write", "ok", {"value": 3}, {"mzxid": 9})], 2, [], "but 3 was acknowledged"),
        ([("write", "ok", {"value": 3}, {"mzxid": 9})], 5, [], "never written"),
        ([("write-shared", "ok", {}, {"mzxid": 9}), ("read-shared", "ok", {}, {"mzxid": 8})],
         0, [], "time travel"),
        ([("create", "info", {"uid": "u"}, {})], 0, ["u", "u"], "duplicated"),
        ([("create", "ok", {"uid": "u"}, {})], 0, [], "exists 0x"),
        ([("create", "fail", {"uid": "u"}, {})], 0, ["u"], "failed create"),
    ],
)  # fmt: skip
def test_session_checker_finds(
    steps: list[tuple[str, str, dict[str, Any], dict[str, Any]]],
    node: int,
    items: list[str],
    found: str,
) -> None:
    log = Log()
    for f, kind, invoked, done in steps:
        log.op("session0.1", f, kind, invoked, **done)
    assert any(found in v for v in session(log, node, items)), session(log, node, items)


# -- tasks ----------------------------------------------------------------------------------------


def tasks(log: Log, final: dict[str, Any]) -> list[str]:
    return TasksWorkload(None).check(log.entries, [], final).violations  # type: ignore[arg-type]


def done_task(payload: str, execution: str, errors: list[Any] | None = None) -> dict[str, Any]:
    result = {"execution": execution, "payload": payload}
    return {"payload": payload, "status": "done", "result": result, "errors": errors or []}


def test_tasks_a_clean_history_has_no_violation() -> None:
    log = Log()
    log.op("submitter.1", "submit", "ok", {"uid": "s1"}, task="task-1")
    log.at(1.0).event("worker0.1", "exec-start", task="task-1", execution="e1", worker="worker0")
    log.at(2.0).event("worker0.1", "exec-end", task="task-1", execution="e1")
    final = {"tasks": {"task-1": done_task("s1", "e1")}, "assigned": {"worker0": []}}
    assert tasks(log, final) == []


def test_tasks_checker_finds_lost_duplicated_unfinished_and_stale_results() -> None:
    log = Log()
    log.op("submitter.1", "submit", "ok", {"uid": "s1"}, task="task-1")
    log.op("submitter.1", "submit", "info", {"uid": "s2"})
    log.op("submitter.1", "submit", "ok", {"uid": "s3"}, task="task-3")
    log.at(1.0).event("worker0.1", "exec-start", task="task-4", execution="e1", worker="worker0")
    log.at(2.0).event("worker0.1", "exec-end", task="task-4", execution="e1")
    final = {
        "tasks": {
            "task-2": {"payload": "s2", "errors": []},  # never ran: pending
            "task-5": {"payload": "s2", "errors": [], "status": "dead"},  # queued twice
            "task-4": done_task("s4", "e1", [("worker worker0 lost while running it", 1.5)]),
        },
        "assigned": {"worker1": ["task-4"]},
    }
    found = "\n".join(tasks(log, final))
    for text in (
        "acknowledged task task-1 (s1) is missing",
        "submission s2 queued 2 times",
        "task task-2 ended pending",
        "result from e1, which started at 1.00 on worker0, moved away at 1.50",
        "task task-4 still assigned to worker1",
    ):
        assert text in found


# -- config ---------------------------------------------------------------------------------------


def config(tmp_path: Path, log: Log, final: dict[str, Any]) -> list[str]:
    ctx = Context(tmp_path, None, 4.0)  # type: ignore[arg-type]
    return ConfigWorkload(ctx).check(log.entries, [], final).violations


def test_config_checker_finds_double_publishes_out_of_order_and_rejected_applies(
    tmp_path: Path,
) -> None:
    log = Log()
    log.op("publisher.1", "publish", "ok", {"uid": "p1", "framing": "framed"}, version="conf-1")
    log.op("publisher.1", "publish", "ok", {"uid": "p2", "framing": "framed"}, version="conf-2")
    versions = {
        "conf-0000000001": "config p1\n",
        "conf-0000000002": "config p2\n",
        "conf-0000000003": "config p2\n",
        "conf-0000000004": "BAD config p3\n",
        "conf-0000000005": "config p4\n",
    }
    final = {
        "versions": versions,
        "files": {"app0": "config p1\n", "app1": "config p4\n"},
        "applied": {
            "app0": [(1.0, "conf-0000000002"), (2.0, "conf-0000000001")],
            "app1": [(1.0, "conf-0000000004"), (2.0, "conf-0000000005")],
        },
    }
    found = "\n".join(config(tmp_path, log, final))
    for text in (
        "acknowledged publish p2 exists 2x",
        "app0 reloaded conf-0000000001 after a newer version",
        "app1 reloaded the rejected version conf-0000000004",
        "app0's file ends on 'config p1\\n', not the newest",
    ):
        assert text in found
    final["files"] = {"app0": "config p4\n", "app1": "config p4\n"}
    final["applied"] = {"app0": [(1.0, "conf-0000000005")], "app1": [(1.0, "conf-0000000005")]}
    assert config(tmp_path, Log(), final) == []


# -- discovery ------------------------------------------------------------------------------------


def test_discovery_an_instance_left_in_a_cache_past_the_bound_is_a_violation(
    tmp_path: Path,
) -> None:
    ctx = Context(tmp_path, None, 4.0)  # type: ignore[arg-type]
    workload = DiscoveryWorkload(ctx)
    expected = sorted(f"web{i}:1" for i in range(4))
    final = {"expected": expected, "registered": [f"web{i}" for i in range(4)]}
    kill = [fault(10.0, "start", "proc-kill", "web0", incarnation=1)]

    def views(left_at: float, suspended: tuple[float, float] | None = None) -> list[Any]:
        log = Log()
        log.at(1.0).event("watcher0.1", "view", instances=expected)
        if suspended:
            log.at(suspended[0]).event("watcher0.1", "session", state="SUSPENDED")
            log.at(suspended[1]).event("watcher0.1", "session", state="RECONNECTED")
        log.at(left_at).event("watcher0.1", "view", instances=expected[1:])
        log.at(left_at + 1).event("watcher0.1", "view", instances=expected)
        return sorted(log.entries, key=lambda e: e["t"])

    assert workload.check(views(10.0 + workload.kill_bound - 0.1), kill, final).violations == []
    late = workload.check(views(10.0 + workload.kill_bound + 0.5), kill, final).violations
    assert any("web0:1 stayed in watcher0" in v for v in late)
    excused = views(10.0 + workload.kill_bound + 0.5, suspended=(11.0, 12.0))
    assert workload.check(excused, kill, final).violations == []
    log = Log()
    log.at(1.0).event("watcher0.1", "view", instances=expected[1:])
    missing = workload.check(log.entries, [], final).violations
    assert any("not every live instance" in v for v in missing)


def test_discovery_a_leader_election_restarts_the_bound(tmp_path: Path) -> None:
    """While the quorum has no leader nothing is deleted, and the new leader restarts every
    session's timer (ZooKeeper's SessionTrackerImpl): the bound counts from the election."""
    workload = DiscoveryWorkload(Context(tmp_path, None, 4.0))  # type: ignore[arg-type]
    expected = sorted(f"web{i}:1" for i in range(4))
    final = {"expected": expected, "registered": [f"web{i}" for i in range(4)]}
    log = Log()
    log.at(1.0).event("watcher0.1", "view", instances=expected)
    log.at(15.0 + workload.kill_bound - 0.1).event("watcher0.1", "view", instances=expected[1:])
    log.at(30.0).event("watcher0.1", "view", instances=expected)
    kill = [fault(10.0, "start", "proc-kill", "web0", incarnation=1)]
    assert workload.check(log.entries, kill, final).violations != []
    outage = [
        fault(12.0, "start", "leader-kill", "leader", leader=True),
        fault(15.0, "leader-elected", "leader-kill", "leader"),
    ]
    assert workload.check(log.entries, kill + outage, final).violations == []
