"""The dispatcher's planning without ZooKeeper: which worker takes which task (free capacity,
pick order), which decisions are due (retry delay), when a task is dead, and where the moves of a
refused batch go back. These are pure functions over the dispatcher's records."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from aiocoord import Op, TaskState
from aiocoord.recipes.tasks import (
    Move,
    _parse_worker,
    _Paths,
    _placements,
    _plan,
    _Redo,
    _refused_move,
    _requeue,
    _retry_delay,
    _until_due,
    _WorkerView,
)

PATHS = _Paths("/rpc")


def views(**capacities: int) -> dict[str, _WorkerView]:
    return {w: _WorkerView(w, czxid=100 + i, capacity=c, draining=False)
            for i, (w, c) in enumerate(capacities.items())}  # fmt: skip


def plan(
    redo: list[_Redo], pending: list[str], workers: dict[str, _WorkerView], *, now: float = 10.0
) -> tuple[list[Move], list[_Redo], int]:
    made = _plan(redo, pending, workers, now=now, max_attempts=3, paths=PATHS)
    return list(made.moves), list(made.waiting), made.assigned


def tasks(n: int, first: int = 0) -> list[str]:
    return [f"task-{i:010d}" for i in range(first, first + n)]


def failed(task: str, failures: int, *, not_before: float = 0.0) -> _Redo:
    return _Redo(task, state=TaskState.FAILED, status_version=2, failures=failures,
                 not_before=not_before)  # fmt: skip


# -- capacity and pick order -------------------------------------------------------------------
def test_each_worker_takes_at_most_its_free_capacity() -> None:
    workers = views(big=3, small=1)
    workers["big"].assigned.add("task-9999999999")  # one slot of big's is taken
    moves, _, assigned = plan([], tasks(10), workers)
    assert Counter(m.worker for m in moves) == {"big": 2, "small": 1}
    assert assigned == 3  # the other 7 stay pending


def test_a_draining_worker_takes_nothing() -> None:
    workers = views(a=4, b=4)
    workers["a"].draining = True
    moves, _, _ = plan([], tasks(3), workers)
    assert [m.worker for m in moves] == ["b", "b", "b"]


def test_tasks_go_to_the_freest_worker_first_and_ties_in_order() -> None:
    assert list(_placements({"a": 1, "b": 3, "c": 2})) == ["b", "b", "c", "a", "b", "c"]
    assert list(_placements({"a": 2, "b": 2})) == ["a", "b", "a", "b"]  # fair between equals
    assert list(_placements({"a": 0})) == []
    assert list(_placements({})) == []


def test_pending_tasks_are_taken_in_queue_order_with_their_assignment_and_status() -> None:
    moves, _, assigned = plan([], tasks(2), views(w=5))
    assert assigned == 2
    assert [m.task for m in moves] == tasks(2)
    first = moves[0]
    assert first.worker == "w" and first.previous is None and first.redo is None
    assert first.ops == (
        Op.create("/rpc/tasks/task-0000000000/status", b"schedule"),
        Op.create("/rpc/assign/w/task-0000000000", b"100"),  # made for this registration
    )


def test_decisions_move_before_pending_tasks() -> None:
    redo = _Redo("task-0000000007", state=TaskState.SCHEDULED, status_version=1)
    moves, waiting, assigned = plan([redo], tasks(2), views(w=2))
    assert [m.task for m in moves] == ["task-0000000007", "task-0000000000"]
    assert moves[0].redo is redo and assigned == 1 and waiting == []
    assert moves[0].ops[-2] == Op.set_data("/rpc/tasks/task-0000000007/status", b"schedule", 1)


def test_nothing_moves_without_a_worker() -> None:
    redo = failed("task-0000000001", 1)
    moves, waiting, assigned = plan([redo], tasks(2), {})
    assert moves == [] and waiting == [redo] and assigned == 0


# -- decisions ---------------------------------------------------------------------------------
def test_a_failed_task_waits_for_its_retry_delay() -> None:
    early = failed("task-0000000001", 1, not_before=12.0)
    due = failed("task-0000000002", 1, not_before=10.0)
    moves, waiting, _ = plan([early, due], [], views(w=4), now=10.0)
    assert [m.task for m in moves] == ["task-0000000002"]
    assert waiting == [early]
    moves, waiting, _ = plan([early], [], views(w=4), now=12.0)
    assert [m.task for m in moves] == ["task-0000000001"] and waiting == []


def test_a_waiting_retry_does_not_hold_up_the_pending_tasks() -> None:
    early = failed("task-0000000001", 1, not_before=99.0)
    moves, waiting, assigned = plan([early], tasks(1, first=5), views(w=1))
    assert [m.task for m in moves] == ["task-0000000005"] and waiting == [early]
    assert assigned == 1


def test_a_task_out_of_attempts_is_dead_without_a_worker() -> None:
    dead = failed("task-0000000001", 3, not_before=99.0)  # dead at once, not after the delay
    moves, waiting, _ = plan([dead], [], {})
    assert waiting == []
    (move,) = moves
    assert move.worker is None and move.redo is dead
    assert move.ops == (Op.set_data("/rpc/tasks/task-0000000001/status", b"dead", 2),)


def test_a_loss_is_recorded_and_charged_as_an_attempt() -> None:
    lost = _Redo("task-0000000001", "gone", "worker gone lost while running it",
                 status_version=4, state=TaskState.SCHEDULED, failures=2)  # fmt: skip
    (move,), _, _ = plan([lost], [], views(w=1))
    assert move.worker is None and move.previous == "gone"  # third failure: dead
    assert move.ops[:2] == (
        Op.delete("/rpc/assign/gone/task-0000000001"),
        Op.create("/rpc/tasks/task-0000000001/error-", b"worker gone lost while running it",
                  sequential=True),
    )  # fmt: skip
    (move,), _, _ = plan([_Redo(lost.task, "gone", lost.reason, 4, lost.state, 1)], [], views(w=1))
    assert move.worker == "w" and move.previous == "gone"  # second failure: moved


def test_a_returned_or_orphaned_task_always_moves() -> None:
    returned = _Redo("task-0000000001", "gone", None, 3, TaskState.SCHEDULED, failures=5)
    (move,), _, _ = plan([returned], [], views(w=1))
    assert move.worker == "w" and move.ops[0] == Op.delete("/rpc/assign/gone/task-0000000001")


# -- a refused batch ---------------------------------------------------------------------------
def test_a_refused_batch_is_planned_again_in_order() -> None:
    redo = failed("task-0000000001", 1)
    batch, _, _ = plan([redo, failed("task-0000000002", 1)], tasks(2, first=5), views(w=4))
    # two ops a move: op 5 is the first pending task's assignment
    refused = _refused_move(batch, 5)
    assert refused is batch[2]
    again = _requeue(batch, refused)
    assert again.redo[:2] == (redo, batch[1].redo)  # the others as they were
    assert again.redo[2] == _Redo("task-0000000005")  # the refused one is read again
    assert again.pending == ("task-0000000006",)


def test_a_refused_move_keeps_the_loss_it_records() -> None:
    lost = _Redo("task-0000000001", "gone", "lost", 1, TaskState.SCHEDULED)
    batch, _, _ = plan([lost], [], views(w=1))
    again = _requeue(batch, _refused_move(batch, 1))
    assert again.redo == (_Redo("task-0000000001", "gone", "lost"),)
    assert again.pending == ()


def test_an_op_index_outside_the_batch_refuses_no_move() -> None:
    batch, _, _ = plan([], tasks(2), views(w=2))
    assert _refused_move(batch, -1) is None and _refused_move(batch, 4) is None
    assert _requeue(batch, None).pending == tuple(tasks(2))


# -- retry delay and worker records ------------------------------------------------------------
def test_retry_delay_doubles_from_the_first_failure_up_to_its_cap() -> None:
    assert [_retry_delay(n, 1.0, 5.0) for n in range(-1, 5)] == [0.0, 0.0, 1.0, 2.0, 4.0, 5.0]
    assert _retry_delay(2, 0.5, 60.0) == 1.0
    assert _retry_delay(3, 0.0, 60.0) == 0.0 and _retry_delay(3, -1.0, 60.0) == 0.0
    # the exponent stops at 64 (2.0 ** 10_000 would overflow), below an unbounded cap
    assert _retry_delay(10_000, 1.0, 60.0) == 60.0
    assert _retry_delay(10_000, 1.0, math.inf) == 2.0**64
    assert _retry_delay(65, 1.0, math.inf) == 2.0**64


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        (b'{"capacity": 3}', (3, False)),
        (b'{"capacity": 2, "draining": true}', (2, True)),
        (b'{"draining": true}', (1, True)),
        (b"{}", (1, False)),
        (b'{"capacity": 0}', (0, False)),
        (b'{"capacity": -2}', (0, False)),
        (b'{"capacity": "4"}', (4, False)),
        (b'{"capacity": "many"}', (1, False)),  # ValueError
        (b'{"capacity": null, "draining": true}', (1, False)),  # TypeError
        (b"", (1, False)),  # a script's worker: no JSON
        (b"worker", (1, False)),
        (b"[3]", (1, False)),
    ],
)
def test_a_worker_node_gives_its_capacity_and_draining(
    data: bytes, parsed: tuple[int, bool]
) -> None:
    assert _parse_worker(data) == parsed


def test_a_worker_view_has_no_free_capacity_when_draining_or_full() -> None:
    view = _WorkerView("w", czxid=1, capacity=2, draining=False)
    assert view.free == 2
    view.assigned.update({"task-0000000001", "task-0000000002", "task-0000000003"})
    assert view.free == 0  # over capacity (it shrank): none, not negative
    view.assigned.clear()
    view.draining = True
    assert view.free == 0


def test_a_decision_is_due_at_its_not_before() -> None:
    redo = failed("task-0000000001", 1, not_before=12.5)
    assert _until_due(redo, 10.0) == 2.5 and _until_due(redo, 13.0) == -0.5


# -- status writes and order within a round ----------------------------------------------------
def test_a_decision_whose_status_is_unread_creates_it_and_a_read_one_is_set_at_its_version() -> (
    None
):
    orphan = _Redo("task-0000000001", "gone")  # status_version None: not read (or none yet)
    read = _Redo("task-0000000002", state=TaskState.SCHEDULED, status_version=0)
    moves, _, _ = plan([orphan, read], [], views(w=2))
    assert moves[0].ops == (
        Op.delete("/rpc/assign/gone/task-0000000001"),
        Op.create("/rpc/tasks/task-0000000001/status", b"schedule"),
        Op.create("/rpc/assign/w/task-0000000001", b"100"),
    )
    assert moves[1].ops == (
        Op.set_data("/rpc/tasks/task-0000000002/status", b"schedule", 0),  # version 0 is a version
        Op.create("/rpc/assign/w/task-0000000002", b"100"),
    )


def test_a_dead_task_whose_status_is_unread_is_set_at_any_version() -> None:
    lost = _Redo("task-0000000001", "gone", "lost", state=TaskState.SCHEDULED, failures=2)
    (move,), _, _ = plan([lost], [], {})
    assert move.task == "task-0000000001" and move.worker is None
    assert move.ops[-1] == Op.set_data("/rpc/tasks/task-0000000001/status", b"dead", -1)


def test_every_decision_is_planned_whatever_comes_before_it() -> None:
    dead = failed("task-0000000001", 3)
    early = failed("task-0000000002", 1, not_before=10.5)  # a worker is free, but not yet
    due = failed("task-0000000003", 1)
    homeless = failed("task-0000000004", 1)  # due, but no worker is left
    also_dead = failed("task-0000000005", 5)
    moves, waiting, _ = plan([dead, early, due, homeless, also_dead], [], views(w=1), now=10.0)
    assert [(m.task, m.worker) for m in moves] == [
        ("task-0000000001", None), ("task-0000000003", "w"), ("task-0000000005", None),
    ]  # fmt: skip
    assert waiting == [early, homeless]


def test_the_refused_move_is_found_by_its_first_and_last_op() -> None:
    batch, _, _ = plan([failed("task-0000000001", 1)], tasks(2, first=5), views(w=4))
    assert [len(m.ops) for m in batch] == [2, 2, 2]
    assert [_refused_move(batch, i) for i in range(6)] == [
        batch[0], batch[0], batch[1], batch[1], batch[2], batch[2],
    ]  # fmt: skip
