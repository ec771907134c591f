"""Cancelling, requeueing and purging tasks against a concurrent dispatcher or worker: each is one
multi() at the status version it read, so a move or completion that lands between its read and
its write makes it look again instead of overwriting. The interleavings are forced: the
competing write is made at the exact moment between the two."""

from __future__ import annotations

import pytest

from aiocoord import Client, MultiFailed, Op, TaskHandle, TaskNotDead, TaskQueue, TaskState

ROOT = "/rpc"


async def assigned_task(zk: Client, worker: str = "w1") -> TaskHandle:
    """A task as the dispatcher leaves it assigned: status "schedule" and the assignment, in one
    multi()."""
    handle = await TaskQueue(zk).submit(b"payload")
    await zk.ensure_path(f"{ROOT}/assign/{worker}")
    await zk.multi([Op.create(f"{handle.path}/status", b"schedule"),
                    Op.create(f"{ROOT}/assign/{worker}/{handle.id}", b"")])  # fmt: skip
    return handle


async def complete(zk: Client, handle: TaskHandle, worker: str = "w1") -> None:
    """The worker's completion: its assignment deleted, done at the version it read, the
    result."""
    _, stat = await zk.get(f"{handle.path}/status")
    await zk.multi([Op.delete(f"{ROOT}/assign/{worker}/{handle.id}"),
                    Op.set_data(f"{handle.path}/status", b"done", stat.version),
                    Op.create(f"{handle.path}/result", b"result")])  # fmt: skip


async def test_cancel_loses_to_a_completion_made_between_its_read_and_its_write(
    zk: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await assigned_task(zk)
    find_owner = TaskHandle._assigned_to

    async def completed_meanwhile(self: TaskHandle) -> str | None:
        if await zk.exists(f"{ROOT}/assign/w1/{handle.id}") is not None:
            await complete(zk, handle)  # after cancel() read "assigned", before it writes
        return await find_owner(self)

    monkeypatch.setattr(TaskHandle, "_assigned_to", completed_meanwhile)
    assert await handle.cancel() is False  # it looked again: done, nothing to cancel
    assert await handle.status() is TaskState.DONE
    assert await handle.result() == b"result"


async def test_a_cancelled_task_cannot_be_completed_by_its_worker(zk: Client) -> None:
    handle = await assigned_task(zk)
    assert await handle.cancel() is True
    assert await zk.exists(f"{ROOT}/assign/w1/{handle.id}") is None  # the worker is told
    with pytest.raises(MultiFailed):
        await complete(zk, handle)  # its completion is refused as a whole
    assert await handle.status() is TaskState.CANCELLED
    assert await zk.exists(f"{handle.path}/result") is None


async def dead_task(zk: Client) -> TaskHandle:
    handle = await TaskQueue(zk).submit(b"payload")
    await zk.create(f"{handle.path}/status", b"dead")
    await zk.create(f"{handle.path}/error-", b"ValueError: boom", sequential=True)
    await zk.create(f"{handle.path}/traceback-", b"Traceback ...", sequential=True)
    return handle


@pytest.mark.parametrize("action", ["requeue", "purge"])
async def test_requeue_and_purge_do_not_apply_to_a_task_moved_meanwhile(
    zk: Client, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """Someone requeues the dead task by hand (its status goes, then comes back "schedule")
    between our read and our write: ours is refused and says it is no longer dead."""
    handle = await dead_task(zk)
    removal = TaskHandle._dead_removal

    async def moved_meanwhile(self: TaskHandle) -> list[Op]:
        ops = await removal(self)
        _, stat = await zk.get(f"{handle.path}/status")
        if stat.version == 0:
            await zk.set(f"{handle.path}/status", b"schedule", 0)
        return ops

    monkeypatch.setattr(TaskHandle, "_dead_removal", moved_meanwhile)
    with pytest.raises(TaskNotDead, match="is assigned, not dead"):
        await getattr(handle, action)()
    assert await handle.status() is TaskState.SCHEDULED
    assert len(await zk.children(f"{ROOT}/tasks")) == 1  # no new task either


async def test_dead_tasks_carry_the_traceback_of_their_last_failure(zk: Client) -> None:
    handle = await dead_task(zk)
    await zk.create(f"{handle.path}/error-", b"worker w1 lost while running it", sequential=True)
    [dead] = await TaskQueue(zk).dead()
    # the last failure was a loss, which has no traceback: not the earlier failure's
    assert (dead.attempts, dead.error, dead.traceback) == (2, "worker w1 lost while running it",
                                                           "")  # fmt: skip
    await zk.create(f"{handle.path}/error-", b"ValueError: again", sequential=True)
    await zk.create(f"{handle.path}/traceback-", b"Traceback (again)", sequential=True)
    [dead] = await TaskQueue(zk).dead()
    assert (dead.attempts, dead.error, dead.traceback) == (3, "ValueError: again",
                                                           "Traceback (again)")  # fmt: skip
    new = await handle.requeue()
    assert new.id != handle.id and await new.status() is TaskState.PENDING
    assert await zk.get(new.path) == (b"payload", (await zk.get(new.path))[1])
    assert await zk.children(new.path) == []  # fresh attempts
    assert await TaskQueue(zk).dead() == []
