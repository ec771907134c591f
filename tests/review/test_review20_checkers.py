"""Review 20: are the campaign's new checkers (``chaos/workloads/counter.py``, ``locks.py``)
sound? Fed histories, without a server, as ``tests/chaos/test_checkers.py`` does.

Finding (counter): the checker compares only the COUNT of increments with the final value
(acknowledged <= final <= acknowledged + unknown) and looks for two acknowledged increments
leaving the same value. It never compares the VALUES the acknowledged increments left with the
final value. Every increment adds 1, so an acknowledged increment that left ``v`` proves the
counter reached ``v``: a final value below the highest acknowledged ``post`` means acknowledged
increments were lost (the counter went back). With unknown increments to make up the count, such
a history passes: e.g. acknowledged posts 1, 2, 3, 6, 7, two unknown increments (which left 4 and
5), final 5 -- the increments that left 6 and 7 were acknowledged and are gone (a rolled back
write, a member that came back empty and led). The docstring promises "none acknowledged was
lost".
"""

from __future__ import annotations

from chaos.workloads.counter import CounterWorkload
from chaos.workloads.locks import LockWorkload, SemaphoreWorkload
from tests.chaos.test_checkers import Log, guarded, locks


def _counter(log: Log, final: int) -> list[str]:
    return CounterWorkload(None).check(log.entries, [], final).violations  # type: ignore[arg-type]


def test_counter_a_final_value_below_an_acknowledged_post_value_is_a_violation() -> None:
    log = Log()
    for post in (1, 2, 3, 6, 7):
        log.op("counter0.1", "increment", "ok", {}, post=post)
    log.op("counter1.1", "increment", "info", {}, error="CounterOutcomeUnknown")
    log.op("counter1.1", "increment", "info", {}, error="CounterOutcomeUnknown")
    # the counter reached 7 (an acknowledged increment left it), yet it ends on 5: two
    # acknowledged increments are gone
    assert _counter(log, 5) != []


# -- what held: the checkers flag what they exist for and accept correct histories ---------------


def test_counter_held_a_correct_history_with_unknowns_applied_or_not_passes() -> None:
    log = Log()
    for post in (1, 2, 4):
        log.op("counter0.1", "increment", "ok", {}, post=post)
    log.op("counter1.1", "increment", "info", {}, error="CounterOutcomeUnknown")  # left 3
    log.op("counter1.1", "increment", "none", {})  # killed, never applied
    assert _counter(log, 4) == []
    assert _counter(log, 5) == []


def test_lock_held_holders_in_queue_order_pass_and_an_older_token_after_a_newer_fails() -> None:
    log = Log()
    guarded(log, "lock0.1", 10, 12)
    guarded(log, "lock0.1", 10, 14)
    guarded(log, "lock1.1", 11, 16)  # queued behind 10 since 11, holds once 10 is gone
    guarded(log, "lock2.1", 30, 31)
    assert locks(LockWorkload, log, checked_at=1000.5) == []
    guarded(log, "lock1.1", 11, 35)  # 11 existed at 35, so it was ahead of 30 when 30 wrote
    assert any("two holders" in v for v in locks(LockWorkload, log, checked_at=1000.5))


def test_semaphore_held_a_lease_taken_once_one_of_two_went_passes() -> None:
    log = Log()
    guarded(log, "semaphore0.1", 10, 11)
    guarded(log, "semaphore1.1", 12, 13)
    guarded(log, "semaphore1.1", 12, 20)
    guarded(log, "semaphore2.1", 15, 16)  # taken after 10's last write: 10 had gone
    assert locks(SemaphoreWorkload, log, checked_at=1000.5) == []
