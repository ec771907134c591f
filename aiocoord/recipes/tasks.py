"""Task dispatch: clients submit tasks, one elected dispatcher assigns them to live workers by free
capacity, workers run them and write the outcome; the tasks of a lost worker are reassigned.

Znode layout (the ``/rpc`` tree older kazoo/zkpython scripts use; ``root`` defaults to ``/rpc``)::

    <root>/master                     EPHEMERAL: held by the active dispatcher (data: its identity)
    <root>/epoch                      PERSISTENT: its version is bumped in the multi() that creates
                                      ``master``; every dispatcher write checks both (fencing)
    <root>/workers/<worker-id>        EPHEMERAL, JSON {"capacity": N, "draining": bool, ...}
    <root>/assign/<worker-id>/<task>  one per assignment; data = the czxid of the worker node it
                                      was made for (a restarted worker of the same id has another)
    <root>/tasks/task-<10 digits>     PERSISTENT_SEQUENTIAL, data = the payload bytes
    <root>/tasks/<task>/status        absent (pending), "schedule", "failed" (waiting for the
                                      dispatcher's retry), "done", "dead", "cancelled"
    <root>/tasks/<task>/result        the result bytes, created together with status "done"
    <root>/tasks/<task>/error-<10 d>  one per failed attempt (the error text): their count is the
                                      number of failures; the last one is the reason of "dead"
    <root>/tasks/<task>/traceback-<10 d>  the handler's traceback of the failure recorded in
                                      error-<N>: created in the same multi(), right after it, so
                                      its number is N+1 (a loss recorded by the dispatcher has none)
    <root>/submitting/<uuid>.marker   EPHEMERAL, created with a task by ``TaskQueue.submit`` (the
                                      same multi(), so the same zxid) to learn whether a submit
                                      whose reply was lost was applied; deleted in the next submit's
                                      multi(), or with the session. Nothing else reads it.

A plain script that creates ``<root>/tasks/task-`` and polls ``.../status`` for ``done`` works.

Every move is one multi(), so a crash between two steps loses and duplicates nothing: the
dispatcher's assignment creates or sets ``status`` and creates the assignment together (or moves
an assignment from a lost worker to a live one, recording the loss as an error), so every move
bumps the status version, and the status's mzxid is the assignment's czxid. A worker reads the
status version its assignment's move left before it runs the task (an assignment older than its
status is not run), marks the assignment started (version 1: a loss is charged as a failed
attempt only to started tasks), and completes in one multi() that deletes its assignment and
writes ``done`` at that version with the result: a worker whose task was moved (paused past its
session timeout, presumed dead) cannot complete it, even when the task went to a replacement of
the same worker id at the same path. Tasks run at least once and complete exactly once. A
completion refused while the task is still the worker's (a stray ``result``) is a failed attempt.
A failed task waits ``retry_delay``, doubled per further failure, before its next attempt.

Administration (``TaskHandle.cancel()``, ``requeue()``, ``purge()``) writes under the same rules:
each is one multi() at the status version it read, so it and a concurrent move or completion
cannot both apply. A cancelled task is finished (``cancelled``), whether it was pending or
assigned: its worker's completion is refused. A dead task is requeued as a new task (a new id,
the same payload, fresh attempts) created in the multi() that deletes the dead one, which the
dispatcher sees as any submit; purged, it is deleted.

SUSPENDED: the dispatcher keeps its state (its writes are fenced, and wait for the reconnect);
workers keep running their tasks. RECONNECTED: the dispatcher re-reads everything (cheap next to
a wrong assignment). LOST: the dispatcher's term ends (``master`` went with the session) and it
contends again; a worker cancels the runs of the ended session (the dispatcher treats the old
registration as lost and moves its tasks; a handler that ignores the cancellation cannot
complete a moved task), registers again on the new session (waiting, stoppable, while a
replacement of its id holds the node) and re-reads its assignments. Cancellation:
``Dispatcher.run()`` resigns at once; ``Worker.run()`` stops taking tasks, finishes what it runs
within ``grace``, cancels the rest and waits for their runs to end (a handler in a thread is
waited for), returns them to the queue, and deregisters; it never touches another process's
registration or assignments of its id. The dispatcher removes ``assign/<worker-id>`` of a worker
that is gone once its tasks have moved.

The dispatcher's leadership is its own, not ``Election``'s, because that would change the
layout: an election is a directory of EPHEMERAL_SEQUENTIAL candidates, while ``<root>/master`` is
one EPHEMERAL node whose data is the active dispatcher's identity, the layout DESIGN.md fixes for
the kazoo scripts, operators and ``aiocoord status`` that read it (and for older dispatchers,
which would find ``master`` taken for good by an election's persistent parent). The fencing is
its own too: a term's writes check ``master`` and ``<root>/epoch``, whose version the multi()
that creates ``master`` bumps, so a term's token is a counter that outlives the node, where
``Term.guard`` checks only its candidate node. Standbys all watch ``master`` (there are few).

The dispatcher plans each round's moves (``Move``) with pure functions over its records
(``_plan``: which worker takes which task by free capacity, which decision is due;
``_requeue``: where the moves of a refused batch go back); the I/O around them only reads the
tree into those records and writes the moves in batches.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import math
import os
import re
import socket
import time
import traceback
import uuid
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from ..transport import codec
from ..transport.client import Client
from ..transport.errors import (
    BadVersion,
    ConnectionLoss,
    CoordError,
    MultiFailed,
    NodeExists,
    NoNode,
    NotEmpty,
    PayloadTooLarge,
    RequestTimeout,
    SessionExpired,
)
from ..transport.paths import validate_path
from ..transport.types import (
    EventType,
    Op,
    SessionEvent,
    SessionState,
    SetDataResult,
    WatchEvent,
    ZnodeStat,
)
from ._session import RETRYABLE, Wakeup, hold_ephemeral, listening, pipelined

__all__ = [
    "DeadTask",
    "Dispatcher",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "TaskHandler",
    "TaskNotDead",
    "TaskQueue",
    "TaskState",
    "UnknownTask",
    "Worker",
]

log = logging.getLogger("aiocoord.tasks")

T = TypeVar("T")
_TASK_ID = re.compile(r"task-\d{10}")
_READ_CHUNK = 2000  # reads in flight at once when a whole tree is read
_MARKER_BATCH = 16  # earlier submits' markers deleted in one submit's transaction


class TaskState(enum.Enum):
    """Where a task is. The values are the words in ``<task>/status`` (PENDING: no status)."""

    PENDING = "pending"
    SCHEDULED = "schedule"
    FAILED = "failed"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        """The state's name for people: "assigned" for SCHEDULED, else the value."""
        return "assigned" if self is TaskState.SCHEDULED else self.value

    @property
    def finished(self) -> bool:
        return self in (TaskState.DONE, TaskState.DEAD, TaskState.CANCELLED)

    @classmethod
    def parse(cls, data: bytes) -> TaskState:
        """The state a status node holds; unknown words count as SCHEDULED (in progress)."""
        try:
            return cls(data.decode(errors="replace").strip())
        except ValueError:
            return cls.SCHEDULED


class UnknownTask(CoordError):
    """No task by this id (never submitted, or cleaned up after its retention period)."""


class TaskFailed(CoordError):
    """The task is dead: it failed ``attempts`` times; ``error`` is the last failure, and
    ``traceback`` its handler's traceback ("" when it has none: a lost worker, an older worker)."""

    def __init__(self, task_id: str, error: str, attempts: int, traceback: str = "") -> None:
        super().__init__(f"{task_id} failed {attempts} time(s); last error: {error}")
        self.task_id = task_id
        self.error = error
        self.attempts = attempts
        self.traceback = traceback


class TaskCancelled(TaskFailed):
    """The task was cancelled before it completed."""

    def __init__(self, task_id: str) -> None:
        CoordError.__init__(self, f"{task_id} was cancelled")
        self.task_id = task_id
        self.error = "cancelled"
        self.attempts = 0
        self.traceback = ""


class TaskNotDead(CoordError):
    """Only a dead task can be requeued or purged; ``state`` is where this one is."""

    def __init__(self, task_id: str, state: TaskState) -> None:
        super().__init__(f"{task_id} is {state.label}, not dead")
        self.task_id = task_id
        self.state = state


@dataclass(frozen=True, slots=True)
class DeadTask:
    """A dead task: how often it failed, its last error and that failure's traceback."""

    id: str
    attempts: int
    error: str
    traceback: str


@dataclass(frozen=True, slots=True)
class Task:
    """A task as a worker's handler gets it."""

    id: str
    payload: bytes
    worker: str


#: A worker's handler: the result bytes (at most 1 MiB), or an exception (the attempt failed).
TaskHandler = Callable[[Task], Awaitable[bytes]]


class _Paths:
    def __init__(self, root: str) -> None:
        validate_path(root)
        root = root.rstrip("/") or "/"
        self.root = root
        base = "" if root == "/" else root
        self.master = f"{base}/master"
        self.epoch = f"{base}/epoch"
        self.workers = f"{base}/workers"
        self.assign = f"{base}/assign"
        self.tasks = f"{base}/tasks"
        self.submitting = f"{base}/submitting"

    def task(self, task_id: str) -> str:
        return f"{self.tasks}/{task_id}"

    def status(self, task_id: str) -> str:
        return f"{self.tasks}/{task_id}/status"

    def result(self, task_id: str) -> str:
        return f"{self.tasks}/{task_id}/result"

    def error(self, task_id: str) -> str:
        return f"{self.tasks}/{task_id}/error-"

    def traceback(self, task_id: str) -> str:
        return f"{self.tasks}/{task_id}/traceback-"

    def worker(self, worker_id: str) -> str:
        return f"{self.workers}/{worker_id}"

    def assignment(self, worker_id: str, task_id: str) -> str:
        return f"{self.assign}/{worker_id}/{task_id}"


def _check_task_id(task_id: str) -> str:
    if not _TASK_ID.fullmatch(task_id):
        raise ValueError(f"bad task id {task_id!r}: expected task-<10 digits>")
    return task_id


def _check_name(kind: str, name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad {kind} {name!r}: a non-empty name without '/'")
    return name


async def _gather(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    """Run ``coros`` concurrently (pipelined on one session, ``_READ_CHUNK`` at once); their
    errors are returned in place of their results."""
    pending = list(coros)

    async def settled(coro: Coroutine[Any, Any, T]) -> T | BaseException:
        try:
            return await coro
        except Exception as exc:
            return exc

    try:
        return await pipelined([functools.partial(settled, c) for c in pending], _READ_CHUNK)
    finally:
        for coro in pending:  # cancelled: those never started are closed, not left unawaited
            coro.close()


async def _read_status(client: Client, paths: _Paths, task_id: str) -> tuple[TaskState, ZnodeStat]:
    """The task's state and its status node's stat (version -1 when pending); UnknownTask when
    the task does not exist."""
    try:
        data, stat = await client.get(paths.status(task_id))
        return TaskState.parse(data), stat
    except NoNode:
        stat_or_none = await client.exists(paths.task(task_id))
        if stat_or_none is None:
            raise UnknownTask(f"no task {task_id} under {paths.tasks}") from None
        return TaskState.PENDING, stat_or_none._replace(version=-1)


async def _errors(client: Client, paths: _Paths, task_id: str) -> tuple[int, str]:
    """How often the task failed, and the last error."""
    failure = await _failure(client, paths, task_id, with_traceback=False)
    return failure.attempts, failure.error


async def _failure(
    client: Client, paths: _Paths, task_id: str, *, with_traceback: bool = True
) -> DeadTask:
    """The task's failures: their count, the last error and (``with_traceback``) the traceback
    recorded with it (``traceback-<N+1>`` of ``error-<N>``)."""
    children = set(await client.children(paths.task(task_id)))
    names = sorted(n for n in children if n.startswith("error-"))
    if not names:
        return DeadTask(task_id, 0, "", "")
    wanted = [names[-1]]
    traceback_name = f"traceback-{int(names[-1].removeprefix('error-')) + 1:010d}"
    if with_traceback and traceback_name in children:
        wanted.append(traceback_name)
    texts: list[str] = []
    for reply in await _gather(client.get(f"{paths.task(task_id)}/{n}") for n in wanted):
        if isinstance(reply, BaseException) and not isinstance(reply, NoNode):
            raise reply
        texts.append(reply[0].decode(errors="replace") if isinstance(reply, tuple) else "")
    return DeadTask(task_id, len(names), texts[0], texts[1] if len(texts) > 1 else "")


# -- clients ---------------------------------------------------------------------------------
class TaskQueue:
    """Submit tasks under ``root`` and follow them."""

    def __init__(self, client: Client, root: str = "/rpc") -> None:
        self._client = client
        self._paths = _Paths(root)
        self._ready = False
        #: (session id, path) of the markers of applied submits, deleted by the next submit
        self._done_markers: list[tuple[int, str]] = []

    @property
    def root(self) -> str:
        return self._paths.root

    async def submit(self, payload: bytes) -> TaskHandle:
        """Queue a task (one sequential node). Once this returns, the task is acknowledged: it
        will run. ``PayloadTooLarge`` (over 1 MiB) is raised before anything is sent.

        A lost reply never queues a task twice. The task is created in one multi() with an
        ephemeral marker ``<root>/submitting/<uuid>.marker`` (the task's name stays
        ``task-<10 digits>``). When the outcome is unknown (``ConnectionLoss``,
        ``RequestTimeout``), this call waits for the session to serve again and looks for the
        marker: there (applied), the task is the one with the marker's czxid (found by a binary
        search of ``tasks/``); absent on the same session (not applied), the task is submitted
        again. If the session was lost meanwhile the marker went with it and the outcome cannot
        be known: ``ConnectionLoss`` is raised, saying the task may or may not be queued
        (submitting again may make a second task). So this call waits through a disconnection:
        bound it with ``anyio.fail_after``.

        The cost: the marker's create (and the previous submit's marker's delete) ride in the
        task's transaction: no extra round trip; the first submit of a queue makes sure
        ``submitting`` exists. A lost reply costs a sync, an exists, a listing of ``tasks/`` and
        O(log n) exists calls.
        """
        if not isinstance(payload, bytes):
            raise TypeError("a task payload is bytes")
        client, paths = self._client, self._paths
        while not self._ready:
            try:
                await client.ensure_path(paths.tasks)
                await client.ensure_path(paths.submitting)
                self._ready = True
            except RETRYABLE:  # nothing of the task was sent yet: persistent paths, again
                await client.wait_connected()
        marker = f"{paths.submitting}/{uuid.uuid4().hex}.marker"
        task_op = Op.create(f"{paths.tasks}/task-", payload, sequential=True)
        made_paths = False
        while True:
            session = client.session_id
            stale = self._take_markers(session)
            ops = [task_op, Op.create(marker, ephemeral=True), *(Op.delete(m) for m in stale)]
            applied: bool | None = None  # None: unknown (e.g. cancelled in flight)
            try:
                results = await client.multi(ops)
                applied = True
                task_id = results[0].path.rsplit("/", 1)[1]  # type: ignore[union-attr]
            except (ConnectionLoss, RequestTimeout) as exc:
                log.info("outcome of a submit to %s unknown (%s: %s): looking for its marker",
                         paths.tasks, type(exc).__name__, exc)  # fmt: skip
                found = await self._submitted(marker, session, exc)
                applied = found is not None
                if found is None:
                    log.info("submit to %s not applied (%s): submitting again", paths.tasks, exc)
                    continue
                task_id = found
            except MultiFailed as exc:
                applied = False
                if isinstance(exc.cause, NoNode) and exc.index >= 2:
                    stale.clear()  # a marker gone already (its submit's outcome was unknown)
                elif isinstance(exc.cause, NoNode) and not made_paths:
                    made_paths = True
                    await client.ensure_path(paths.tasks)
                    await client.ensure_path(paths.submitting)
                else:
                    raise
                continue
            except PayloadTooLarge:
                applied = False  # refused before sending
                raise
            finally:
                if not applied:  # the deletions are still to be done
                    self._done_markers.extend((session, m) for m in stale)
                if applied is None:  # and our marker may exist
                    self._done_markers.append((session, marker))
            self._done_markers.append((session, marker))  # deleted by the next submit
            return TaskHandle(client, paths, task_id)

    def _take_markers(self, session: int) -> list[str]:
        """Markers of earlier submits to delete in this submit's transaction (those of another
        session went with it)."""
        batch = [m for s, m in self._done_markers[:_MARKER_BATCH] if s == session]
        del self._done_markers[:_MARKER_BATCH]
        return batch

    async def _submitted(self, marker: str, session: int, cause: CoordError) -> str | None:
        """After a submit's outcome was lost: its task id if it was applied, None if not."""
        client, paths = self._client, self._paths
        while True:
            await client.wait_connected()
            if client.session_id != session:
                raise ConnectionLoss(
                    f"the session ended before the outcome of a submit was known ({cause}): the "
                    "task may or may not be queued",
                    path=paths.tasks,
                ) from cause
            try:
                await client.sync(paths.submitting)  # reads after it see every write we made
                stat = await client.exists(marker)
            except RETRYABLE:
                continue
            if client.session_id != session:
                continue  # answered on another session: the marker may have gone with ours
            if stat is None:
                return None
            task_id = await self._task_made_at(stat.czxid)
            if task_id is None:
                raise UnknownTask(
                    f"a task was submitted (zxid 0x{stat.czxid:x}) but is no longer under "
                    f"{paths.tasks}: finished and cleaned up, or deleted"
                )
            return task_id

    async def _task_made_at(self, czxid: int) -> str | None:
        """The task created at ``czxid``: a binary search of ``tasks/`` (sequence numbers follow
        creation order, so czxids grow with the names)."""
        client = self._client
        while True:
            try:
                listed = await client.children(self._paths.tasks)
                names = sorted(n for n in listed if _TASK_ID.fullmatch(n))
                lo, hi = 0, len(names)
                while lo < hi:
                    mid = (lo + hi) // 2
                    stat = await client.exists(self._paths.task(names[mid]))
                    if stat is None:  # deleted meanwhile: search the others
                        del names[mid]
                        hi -= 1
                    elif stat.czxid == czxid:
                        return names[mid]
                    elif stat.czxid < czxid:
                        lo = mid + 1
                    else:
                        hi = mid
                return None
            except RETRYABLE:  # the task is persistent: any session finds it
                await client.wait_connected()

    def handle(self, task_id: str) -> TaskHandle:
        """A handle on a task submitted earlier (no I/O; ``ValueError`` for a malformed id)."""
        return TaskHandle(self._client, self._paths, _check_task_id(task_id))

    async def counts(self) -> dict[TaskState, int]:
        """How many tasks are in each state (reads every task's status)."""
        try:
            names = await self._client.children(self._paths.tasks)
        except NoNode:
            names = []
        counts = dict.fromkeys(TaskState, 0)
        states = await _gather(_read_status(self._client, self._paths, n) for n in names)
        for state in states:
            if isinstance(state, tuple):
                counts[state[0]] += 1
            elif not isinstance(state, UnknownTask):  # deleted meanwhile: not counted
                raise state
        return counts

    async def dead(self) -> list[DeadTask]:
        """The dead tasks, oldest first, each with its last error and traceback."""
        client, paths = self._client, self._paths
        try:
            names = sorted(n for n in await client.children(paths.tasks) if _TASK_ID.fullmatch(n))
        except NoNode:
            return []
        states = await _gather(_read_status(client, paths, n) for n in names)
        dead = [n for n, got in zip(names, states, strict=True)
                if isinstance(got, tuple) and got[0] is TaskState.DEAD]  # fmt: skip
        failures = await _gather(_failure(client, paths, n) for n in dead)
        await _raise_first([*states, *failures])
        return [f for f in failures if isinstance(f, DeadTask)]


class TaskHandle:
    """One submitted task: its ``status()``, its ``result()``, ``cancel()``."""

    def __init__(self, client: Client, paths: _Paths, task_id: str) -> None:
        self._client = client
        self._paths = paths
        self.id = task_id

    @property
    def path(self) -> str:
        return self._paths.task(self.id)

    def __repr__(self) -> str:
        return f"TaskHandle({self.path!r})"

    async def status(self) -> TaskState:
        """The task's state now; ``UnknownTask`` when there is no such task."""
        state, _ = await _read_status(self._client, self._paths, self.id)
        return state

    async def result(self) -> bytes:
        """Wait until the task is finished: its result bytes, or ``TaskFailed`` (dead, with the
        last error), ``TaskCancelled``, ``UnknownTask``. Bound the wait with
        ``anyio.fail_after``."""
        client = self._client
        status = self._paths.status(self.id)
        while True:
            changed = Wakeup()
            try:
                try:
                    data, _ = await client.get(status, watch=changed.watch)
                except NoNode:
                    if await client.exists(status, watch=changed.watch) is None:
                        if await client.exists(self.path) is None:
                            raise UnknownTask(
                                f"no task {self.id} under {self._paths.tasks}"
                            ) from None
                        await changed.wait()
                    continue
                state = TaskState.parse(data)
                if state is TaskState.DONE:
                    try:
                        result, _ = await client.get(self._paths.result(self.id))
                    except NoNode:  # a script that writes only "done"
                        result = b""
                    return result
                if state is TaskState.DEAD:
                    failure = await _failure(client, self._paths, self.id)
                    raise TaskFailed(self.id, failure.error, failure.attempts, failure.traceback)
                if state is TaskState.CANCELLED:
                    raise TaskCancelled(self.id)
                await changed.wait()
            except RETRYABLE:
                await client.wait_connected()
            finally:
                with contextlib.suppress(CoordError):
                    await client.remove_watch(status, changed.watch)

    async def cancel(self) -> bool:
        """Cancel the task unless it finished: True when this call cancelled it. A running task's
        worker is told (its assignment goes) and cannot complete it."""
        client, paths = self._client, self._paths
        while True:
            state, stat = await _read_status(client, paths, self.id)
            if state.finished:
                return False
            try:
                if state is TaskState.PENDING:
                    await client.create(paths.status(self.id), b"cancelled")
                    return True
                ops = [Op.set_data(paths.status(self.id), b"cancelled", stat.version)]
                owner = await self._assigned_to()
                if owner is not None:
                    ops.insert(0, Op.delete(paths.assignment(owner, self.id)))
                await client.multi(ops)
                return True
            except (NodeExists, MultiFailed):
                continue  # it moved on meanwhile: look again

    async def requeue(self) -> TaskHandle:
        """Queue a dead task again: a new task (a new id, the same payload, fresh attempts) made
        in the multi() that deletes this one; the handle of the new task. ``TaskNotDead``,
        ``UnknownTask``. A ``ConnectionLoss`` leaves the outcome unknown (see ``dead()``)."""
        client, paths = self._client, self._paths
        while True:
            removal = await self._dead_removal()
            payload, _ = await client.get(self.path)
            try:
                made = await client.multi(
                    [*removal, Op.create(f"{paths.tasks}/task-", payload, sequential=True)]
                )
            except MultiFailed:
                continue  # changed meanwhile (purged, cleaned up): look again
            new_id = made[-1].path.rsplit("/", 1)[1]  # type: ignore[union-attr]
            return TaskHandle(client, paths, new_id)

    async def purge(self) -> None:
        """Delete a dead task. ``TaskNotDead``, ``UnknownTask``."""
        while True:
            removal = await self._dead_removal()
            try:
                await self._client.multi(removal)
                return
            except MultiFailed:
                continue  # changed meanwhile: look again

    async def _dead_removal(self) -> list[Op]:
        """The ops that delete this task if it is still dead at the status version read now
        (status first, at that version: so nothing else may have moved it meanwhile)."""
        client, paths = self._client, self._paths
        state, stat = await _read_status(client, paths, self.id)
        if state is not TaskState.DEAD:
            raise TaskNotDead(self.id, state)
        try:
            children = await client.children(self.path)
        except NoNode:
            raise UnknownTask(f"no task {self.id} under {paths.tasks}") from None
        ops = [Op.delete(paths.status(self.id), stat.version)]
        ops += [Op.delete(f"{self.path}/{c}") for c in sorted(children) if c != "status"]
        return [*ops, Op.delete(self.path)]

    async def _assigned_to(self) -> str | None:
        try:
            workers = await self._client.children(self._paths.assign)
        except NoNode:
            return None
        stats = await _gather(
            self._client.exists(self._paths.assignment(w, self.id)) for w in workers
        )
        for worker, stat in zip(workers, stats, strict=True):
            if isinstance(stat, ZnodeStat):
                return worker
        return None


# -- dispatcher ------------------------------------------------------------------------------
class _Deposed(Exception):
    """The dispatcher's term ended (its guarded write found master/epoch changed)."""


@dataclass(slots=True)
class _WorkerView:
    id: str
    czxid: int
    capacity: int
    draining: bool
    assigned: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return 0 if self.draining else max(0, self.capacity - len(self.assigned))


@dataclass(frozen=True, slots=True)
class _Redo:
    """A task that needs a decision: failed, returned from a lost worker, or found orphaned."""

    task: str
    from_worker: str | None = None  # the assignment to delete (a lost worker's)
    reason: str | None = None  # an error to record (the loss)
    status_version: int | None = None  # None until read
    state: TaskState | None = None
    failures: int = 0
    last_error: str = ""
    not_before: float = 0.0  # (monotonic) a failed task's retry waits until then

    @property
    def charged(self) -> int:
        """Its failed attempts, the loss it records included."""
        return self.failures + (self.reason is not None)


@dataclass(frozen=True, slots=True)
class Move:
    """One task's move, written with others in one batch's multi(): to ``worker`` (None: the
    task is marked dead), taking it from ``previous`` (a lost worker, whose assignment ``ops``
    delete) if any. ``redo`` is the decision it came from (None: a pending task's first
    assignment)."""

    task: str
    worker: str | None
    previous: str | None
    ops: tuple[Op, ...]
    redo: _Redo | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one round of the dispatcher writes: ``moves``; what still waits in the redo queue
    (``waiting``: not due yet, or no free worker); how many of the pending queue's first tasks
    the moves take (``assigned``)."""

    moves: tuple[Move, ...]
    waiting: tuple[_Redo, ...]
    assigned: int


@dataclass(frozen=True, slots=True)
class _Requeue:
    """Where the moves of a refused batch go back (each to the front of its queue, in order)."""

    redo: tuple[_Redo, ...]
    pending: tuple[str, ...]


def _retry_delay(failures: int, first: float, cap: float) -> float:
    """How long a task that failed ``failures`` times waits before its next attempt: ``first``,
    doubled with each further failure, at most ``cap``."""
    if failures < 1 or first <= 0:
        return 0.0
    return min(first * 2.0 ** min(failures - 1, 64), cap)


def _until_due(redo: _Redo, now: float) -> float:
    """Seconds until ``redo`` may move (0 or less: it is due)."""
    return redo.not_before - now


def _retries(redo: _Redo, max_attempts: int) -> bool:
    """Whether the task gets another attempt (else it is dead). A failure, or a loss it records,
    counts against ``max_attempts``; a task returned or found orphaned always moves on."""
    if redo.state is TaskState.FAILED or redo.reason is not None:
        return redo.charged < max_attempts
    return True


def _placements(free: Mapping[str, int]) -> Iterator[str]:
    """The workers the next tasks go to, one per task, until no capacity is left: each task to
    the worker with the most free capacity (of equals, the first in ``free``)."""
    left = dict(free)
    while left:
        worker = max(left, key=left.__getitem__)
        if left[worker] <= 0:
            return
        left[worker] -= 1
        yield worker


def _plan(
    redo_queue: Iterable[_Redo],
    pending: Iterable[str],
    workers: Mapping[str, _WorkerView],
    *,
    now: float,
    max_attempts: int,
    paths: _Paths,
) -> _Plan:
    """The moves of one round: the decisions first (a dead task needs no worker; a failed one
    waits for its retry delay), then the pending tasks in queue order, while ``workers`` have
    free capacity. No I/O: a function of the records it is given."""
    places = _placements({w: v.free for w, v in workers.items()})
    moves: list[Move] = []
    waiting: list[_Redo] = []
    for redo in redo_queue:
        ops: list[Op] = []
        if redo.from_worker is not None:
            ops.append(Op.delete(paths.assignment(redo.from_worker, redo.task)))
        if redo.reason is not None:
            ops.append(Op.create(paths.error(redo.task), redo.reason.encode(), sequential=True))
        status = paths.status(redo.task)
        version = redo.status_version if redo.status_version is not None else -1
        if not _retries(redo, max_attempts):
            ops.append(Op.set_data(status, b"dead", version))
            moves.append(Move(redo.task, None, redo.from_worker, tuple(ops), redo))
            continue
        if _until_due(redo, now) > 0:  # a failed task waits for its retry delay
            waiting.append(redo)
            continue
        worker = next(places, None)
        if worker is None:
            waiting.append(redo)
            continue
        if version < 0:
            ops.append(Op.create(status, b"schedule"))
        else:
            ops.append(Op.set_data(status, b"schedule", version))
        ops.append(_assign_op(paths, workers[worker], redo.task))
        moves.append(Move(redo.task, worker, redo.from_worker, tuple(ops), redo))
    assigned = 0
    for task in pending:
        worker = next(places, None)
        if worker is None:
            break
        ops = [Op.create(paths.status(task), b"schedule"), _assign_op(paths, workers[worker], task)]
        moves.append(Move(task, worker, None, tuple(ops)))
        assigned += 1
    return _Plan(tuple(moves), tuple(waiting), assigned)


def _assign_op(paths: _Paths, worker: _WorkerView, task: str) -> Op:
    """The assignment, stamped with the registration it is made for."""
    return Op.create(paths.assignment(worker.id, task), str(worker.czxid).encode())


def _refused_move(batch: Sequence[Move], index: int) -> Move | None:
    """The move of ``batch`` whose op failed: ``index`` counts the batch's ops (the guard not
    included)."""
    offset = 0
    for move in batch:
        if offset <= index < offset + len(move.ops):
            return move
        offset += len(move.ops)
    return None


def _requeue(batch: Sequence[Move], refused: Move | None) -> _Requeue:
    """Nothing of a refused batch was applied: the ``refused`` move's task is to be read again
    (a fresh decision, keeping the loss it records), the others go back to their queues."""
    redo: list[_Redo] = []
    pending: list[str] = []
    for move in batch:
        if move is refused:
            reason = move.redo.reason if move.redo is not None else None
            redo.append(_Redo(move.task, move.previous, reason))
        elif move.redo is not None:
            redo.append(move.redo)
        else:
            pending.append(move.task)
    return _Requeue(tuple(redo), tuple(pending))


def _parse_worker(data: bytes) -> tuple[int, bool]:
    """(capacity, draining) from a worker node; a script's worker without JSON counts as 1."""
    try:
        info = codec.loads_object(data, what="worker node")
        capacity = int(info.get("capacity", 1))
        return max(0, capacity), bool(info.get("draining", False))
    except (codec.DecodeError, TypeError, ValueError):
        return 1, False


class Dispatcher:
    """The task dispatcher: ``await dispatcher.run()`` contends for ``<root>/master``; while it
    holds it, it assigns pending tasks to live workers by free capacity, reassigns the tasks of
    lost workers, retries failed tasks up to ``max_attempts`` (then marks them dead), and deletes
    finished tasks ``retention`` seconds after they finished. Standbys wait and take over.

    A task whose handler failed is retried after ``retry_delay`` seconds, doubled with each
    further failure up to ``max_retry_delay`` (the other tasks are not held up meanwhile); the
    tasks of a lost worker move at once. A task lost with its worker counts as a failed attempt
    only if the worker had started it. The assignment directory of a worker that is gone is
    removed once its tasks have moved.

    ``batch`` is how many task moves go into one multi() (one transaction, one disk sync).
    """

    def __init__(
        self,
        client: Client,
        root: str = "/rpc",
        *,
        identity: str | None = None,
        max_attempts: int = 3,
        retention: float = 3600.0,
        batch: int = 64,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if retention < 0 or batch < 1:
            raise ValueError("retention must be >= 0 and batch >= 1")
        if retry_delay < 0 or max_retry_delay < 0:
            raise ValueError("retry delays must be >= 0")
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._client = client
        self._paths = _Paths(root)
        self._identity = identity
        self.max_attempts = max_attempts
        self.retention = retention
        self.batch = batch
        self._activated = anyio.Event()  # set while active; a new one after each term
        #: what this dispatcher did (for logs, metrics and tests)
        self.counts: dict[str, int] = dict.fromkeys(
            ("terms", "assigned", "reassigned", "retried", "dead", "cleaned"), 0
        )
        self._guard: list[Op] = []
        self._term_scope: anyio.CancelScope | None = None
        self._master_event: WatchEvent | None = None
        self._reset()

    @property
    def identity(self) -> str:
        return self._identity or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def active(self) -> bool:
        """Whether this process is the active dispatcher now."""
        return self._activated.is_set()

    def queue_sizes(self) -> dict[str, int]:
        """What the active dispatcher holds now: pending, assigned (to live workers), deciding
        (failed or moved, waiting for a decision or a free worker), finished (until cleaned up).
        All zero on a standby."""
        if not self.active:
            return dict.fromkeys(("pending", "assigned", "deciding", "finished"), 0)
        return {
            "pending": len(self._pending),
            "assigned": sum(len(v.assigned) for v in self._views.values()),
            "deciding": len(self._redo),
            "finished": len(self._finished),
        }

    async def wait_active(self) -> None:
        """Wait until this process is the active dispatcher."""
        await self._activated.wait()

    def _reset(self) -> None:
        self._views: dict[str, _WorkerView] = {}
        self._known: set[str] = set()
        self._pending: deque[str] = deque()
        self._redo: deque[_Redo] = deque()
        self._finished: dict[str, float] = {}
        self._departed: set[str] = set()  # lost workers whose assignment directory is to go
        self._dirty_tasks = self._dirty_workers = True
        self._dirty_data: set[str] = set()
        self._dirty_assign: set[str] = set()
        self._resync = True
        self._wake = anyio.Event()
        self._next_cleanup = 0.0

    # -- watches (they only mark what to re-read and wake the loop) -----------------------
    def _on_tasks(self, _event: WatchEvent) -> None:
        self._dirty_tasks = True
        self._wake.set()

    def _on_workers(self, _event: WatchEvent) -> None:
        self._dirty_workers = True
        self._wake.set()

    def _on_worker_data(self, event: WatchEvent) -> None:
        self._dirty_data.add(event.path.rsplit("/", 1)[1])
        self._wake.set()

    def _on_assign(self, event: WatchEvent) -> None:
        self._dirty_assign.add(event.path.rsplit("/", 1)[1])
        self._wake.set()

    def _on_master(self, event: WatchEvent) -> None:
        self._master_event = event
        if self._term_scope is not None:
            self._term_scope.cancel()

    # -- the term ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Dispatch whenever this process holds ``<root>/master``; contend again after losing it.
        Runs until cancelled (then resigns at once)."""
        client = self._client
        paths = self._paths
        for path in (paths.epoch, paths.workers, paths.assign, paths.tasks):
            await client.ensure_path(path)
        while True:
            self._term_scope = None
            self._master_event = None
            try:
                await self._acquire()
            except RETRYABLE as exc:
                log.info("dispatcher: contending again after %s", exc)
                continue
            try:
                await self._lead()
            finally:
                self._activated = anyio.Event()
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._resign()

    async def _acquire(self) -> None:
        client, paths = self._client, self._paths
        said_standby = False
        while True:
            await client.wait_connected()
            try:
                results = await client.multi(
                    [
                        Op.create(paths.master, self.identity.encode(), ephemeral=True),
                        Op.set_data(paths.epoch, self.identity.encode()),
                    ]
                )
                bumped = results[1]
                assert isinstance(bumped, SetDataResult)
                self._guard = [
                    Op.check(paths.master, 0),
                    Op.check(paths.epoch, bumped.stat.version),
                ]
                return
            except MultiFailed as exc:
                if not isinstance(exc.cause, NodeExists):
                    raise
            except (ConnectionLoss, RequestTimeout):
                await client.wait_connected()  # it may have been created: look below
            woken = Wakeup()
            stat = await client.exists(paths.master, watch=woken.watch)
            if stat is None:
                continue
            if stat.ephemeral_owner == client.session_id:  # ours, from a create we did not hear of
                epoch = await client.exists(paths.epoch)
                assert epoch is not None
                self._guard = [
                    Op.check(paths.master, stat.version),
                    Op.check(paths.epoch, epoch.version),
                ]
                with contextlib.suppress(CoordError):
                    await client.remove_watch(paths.master, woken.watch)
                return
            if not said_standby:
                holder = await self._holder()
                log.info("dispatcher %s: standby (%s is active)", self.identity, holder)
                said_standby = True
            await woken.wait()

    async def _holder(self) -> str:
        try:
            data, _ = await self._client.get(self._paths.master)
            return data.decode(errors="replace")
        except NoNode:
            return "nobody"

    async def _resign(self) -> None:
        client = self._client
        with contextlib.suppress(CoordError):
            await client.remove_watch(self._paths.master, self._on_master)
        if client.state is SessionState.SUSPENDED:  # the session may come back: owe it
            await client.delete_ephemeral(self._paths.master)  # paid only if still ours
            log.warning("dispatcher %s: resigning while disconnected: master is deleted after "
                        "the reconnect, or with the session", self.identity)  # fmt: skip
            return
        if not client.state.live:
            return  # the node goes with the session
        try:
            # never a successor's node; owed when a reply is lost (or this is cancelled):
            # deleted after the reconnect, so a blip never leaves the standbys waiting for a
            # master that resigned
            if await client.delete_ephemeral(self._paths.master, only_ours=True):
                log.info("dispatcher %s: resigned", self.identity)
            else:
                log.warning("dispatcher %s: resigning: the reply was lost: deleted after the "
                            "reconnect, or with the session", self.identity)  # fmt: skip
        except CoordError as exc:
            log.warning("dispatcher %s: could not delete %s on resign: %s", self.identity,
                        self._paths.master, exc)  # fmt: skip

    async def _lead(self) -> None:
        client = self._client

        def on_session(event: SessionEvent) -> None:
            if event.state is SessionState.RECONNECTED:
                self._resync = True
                self._wake.set()
            elif event.state in (SessionState.LOST, SessionState.CLOSED) and self._term_scope:
                self._term_scope.cancel()

        try:
            with listening(client, on_session), anyio.CancelScope() as scope:
                self._term_scope = scope
                stat = await client.exists(self._paths.master, watch=self._on_master)
                if stat is None or stat.ephemeral_owner != client.session_id:
                    return
                self.counts["terms"] += 1
                self._activated.set()
                log.info("dispatcher %s: active (epoch %d)", self.identity, self._guard[1].version)
                self._reset()
                await self._dispatch()
        except _Deposed as exc:
            log.warning("dispatcher %s: deposed: %s", self.identity, exc)
        except SessionExpired:
            log.warning("dispatcher %s: session expired; contending again", self.identity)
        if self._master_event is not None:
            what = "deleted" if self._master_event.type is EventType.NODE_DELETED else "changed"
            log.warning("dispatcher %s: no longer active: the master node %s was %s",
                        self.identity, self._paths.master, what)  # fmt: skip

    async def _dispatch(self) -> None:
        while True:
            try:
                if self._resync:
                    await self._full_sync()
                else:
                    await self._sync()
                await self._prepare_redo()
                await self._move()
                await self._remove_departed()
                await self._cleanup()
            except (ConnectionLoss, RequestTimeout) as exc:
                log.info("dispatcher: %s; re-reading everything after the reconnect", exc)
                await self._client.wait_connected()
                self._resync = True
                continue
            if not self._more_work():
                # idle: sleep until something changes, the next cleanup or retry is due
                until = self._next_cleanup - time.time() if self._finished else math.inf
                now = time.monotonic()
                for redo in self._redo:
                    until = min(until, _until_due(redo, now))
                with anyio.move_on_after(max(until, 0.0)):
                    await self._wake.wait()
            self._wake = anyio.Event()

    def _more_work(self) -> bool:
        dirty = self._dirty_tasks or self._dirty_workers or self._dirty_data or self._dirty_assign
        if dirty or self._resync:
            return True
        has_room = any(v.free for v in self._views.values())
        now = time.monotonic()
        ready = any(_until_due(r, now) <= 0 for r in self._redo)
        return bool((self._pending or ready) and has_room) or any(
            r.state is None for r in self._redo
        )

    # -- reading the tree ----------------------------------------------------------------------
    async def _full_sync(self) -> None:
        """Read the whole tree (at takeover, and after a reconnect or an unknown write outcome)."""
        client, paths = self._client, self._paths
        self._reset()
        self._resync = False
        self._dirty_tasks = self._dirty_workers = False
        for name in await client.children(paths.workers, watch=self._on_workers):
            await self._read_worker(name)
        dirs = await client.children(paths.assign)
        listings = await _gather(self._list_assign(d) for d in dirs)
        assigned: set[str] = set()
        for d, listing in zip(dirs, listings, strict=True):
            if isinstance(listing, BaseException):
                if isinstance(listing, NoNode):
                    continue
                raise listing
            view = self._views.get(d)
            datas = await _gather(client.get(paths.assignment(d, t)) for t in listing)
            for task, got in zip(listing, datas, strict=True):
                if isinstance(got, BaseException):
                    if isinstance(got, NoNode):
                        continue
                    raise got
                assigned.add(task)
                made_for = got[0].decode(errors="replace")
                if view is not None and made_for in ("", str(view.czxid)):
                    view.assigned.add(task)
                else:
                    self._redo.append(_Redo(task, d, f"worker {d} lost while running it"))
            if view is None and listing:
                self._departed.add(d)  # removed once these moved
            if view is None and not listing:
                with contextlib.suppress(NoNode, NotEmpty):
                    await client.delete(f"{paths.assign}/{d}")
        names = await client.children(paths.tasks, watch=self._on_tasks)
        self._known = set(names)
        unassigned = sorted(n for n in names if n not in assigned)
        states = await _gather(_read_status(client, paths, n) for n in unassigned)
        for name, state in zip(unassigned, states, strict=True):
            if isinstance(state, BaseException):
                if isinstance(state, UnknownTask):
                    self._known.discard(name)
                    continue
                raise state
            self._classify(name, *state)
        log.info(
            "dispatcher: %d workers, %d tasks (%d pending, %d to decide, %d finished)",
            len(self._views), len(self._known), len(self._pending), len(self._redo),
            len(self._finished),
        )  # fmt: skip

    def _classify(self, task: str, state: TaskState, stat: ZnodeStat) -> None:
        """File a task that is not assigned to a live worker by its status."""
        if state is TaskState.PENDING:
            self._pending.append(task)
        elif state.finished:
            self._finished[task] = stat.mtime / 1000
        else:  # failed (retry or dead), or "schedule" with no assignment (a script's leftovers)
            self._redo.append(_Redo(task))  # _prepare_redo reads its failures

    async def _list_assign(self, worker: str) -> list[str]:
        watch = self._on_assign if worker in self._views else None
        return await self._client.children(f"{self._paths.assign}/{worker}", watch=watch)

    async def _read_worker(self, worker: str) -> None:
        client, paths = self._client, self._paths
        try:
            data, stat = await client.get(paths.worker(worker), watch=self._on_worker_data)
        except NoNode:
            self._lose(worker)
            return
        capacity, draining = _parse_worker(data)
        view = self._views.get(worker)
        if view is not None and view.czxid != stat.czxid:
            self._lose(worker)  # restarted: the old registration's tasks are moved
            view = None
        if view is None:
            with contextlib.suppress(NodeExists):
                await client.create(f"{paths.assign}/{worker}")
            self._views[worker] = _WorkerView(worker, stat.czxid, capacity, draining)
            self._dirty_assign.add(worker)
            log.info("dispatcher: worker %s (capacity %d)", worker, capacity)
        else:
            view.capacity, view.draining = capacity, draining

    def _lose(self, worker: str) -> None:
        view = self._views.pop(worker, None)
        if view is None:
            return
        if view.assigned:
            log.warning("dispatcher: worker %s is gone with %d task(s); moving them", worker,
                        len(view.assigned))  # fmt: skip
        else:
            log.info("dispatcher: worker %s left", worker)  # a graceful stop hands back first
        self._departed.add(worker)
        for task in sorted(view.assigned):
            self._redo.append(_Redo(task, worker, f"worker {worker} lost while running it"))

    async def _sync(self) -> None:
        client, paths = self._client, self._paths
        if self._dirty_workers:
            self._dirty_workers = False
            names = set(await client.children(paths.workers, watch=self._on_workers))
            for gone in set(self._views) - names:
                self._lose(gone)
            self._dirty_data |= names - set(self._views)
        dirty_data, self._dirty_data = self._dirty_data, set()
        await _raise_first(await _gather(self._read_worker(w) for w in sorted(dirty_data)))
        if self._dirty_tasks:
            self._dirty_tasks = False
            names = set(await client.children(paths.tasks, watch=self._on_tasks))
            self._pending.extend(sorted(names - self._known))
            removed = self._known - names
            self._known = names
            if removed:
                self._pending = deque(t for t in self._pending if t not in removed)
                for task in removed:
                    self._finished.pop(task, None)
        dirty_assign, self._dirty_assign = self._dirty_assign, set()
        workers = [w for w in sorted(dirty_assign) if w in self._views]
        listings = await _gather(self._list_assign(w) for w in workers)
        left: list[str] = []
        for worker, listing in zip(workers, listings, strict=True):
            if isinstance(listing, NoNode):
                with contextlib.suppress(NodeExists):
                    await client.create(f"{paths.assign}/{worker}")
                self._dirty_assign.add(worker)
                continue
            if isinstance(listing, BaseException):
                raise listing
            view = self._views[worker]
            gone_tasks = view.assigned - set(listing)
            view.assigned -= gone_tasks
            left.extend(gone_tasks)
        states = await _gather(_read_status(client, paths, t) for t in left)
        for task, got in zip(left, states, strict=True):
            if isinstance(got, UnknownTask):
                self._known.discard(task)
            elif isinstance(got, BaseException):
                raise got
            else:
                self._classify(task, *got)

    async def _prepare_redo(self) -> None:
        """Read what a decision needs: the status (and its version), the failures so far."""
        todo = [r for r in self._redo if r.state is None]
        if not todo:
            return
        client, paths = self._client, self._paths

        async def read(redo: _Redo) -> _Redo:
            state, stat = await _read_status(client, paths, redo.task)
            failures, last_error = await _errors(client, paths, redo.task)
            from_worker, reason, not_before = redo.from_worker, redo.reason, redo.not_before
            if state is TaskState.FAILED:
                delay = _retry_delay(failures, self.retry_delay, self.max_retry_delay)
                not_before = time.monotonic() + delay
            if from_worker is not None:
                old = await client.exists(paths.assignment(from_worker, redo.task))
                if old is None:
                    from_worker = reason = None  # already gone (completed, cancelled)
                elif old.version == 0:
                    reason = None  # its worker never started it: not a failed attempt
            return replace(
                redo, from_worker=from_worker, reason=reason, status_version=stat.version,
                state=state, failures=failures, last_error=last_error, not_before=not_before,
            )  # fmt: skip

        results = await _gather(read(r) for r in todo)
        read_now: dict[int, _Redo | None] = {}  # by id() of the record read; None: unknown
        for redo, got in zip(todo, results, strict=True):
            if isinstance(got, UnknownTask):
                read_now[id(redo)] = None
                self._known.discard(redo.task)
            elif isinstance(got, BaseException):
                raise got
            else:
                read_now[id(redo)] = got
        keep: deque[_Redo] = deque()
        for queued in self._redo:
            decided = read_now.get(id(queued), queued)
            if decided is None:
                continue
            assert decided.state is not None
            if decided.state.finished:
                self._finished[decided.task] = time.time()
            elif decided.state is TaskState.PENDING and decided.from_worker is None:
                self._pending.appendleft(decided.task)
            else:
                keep.append(decided)
        self._redo = keep

    # -- writing -------------------------------------------------------------------------------
    async def _move(self) -> None:
        plan = _plan(
            self._redo, self._pending, self._views,
            now=time.monotonic(), max_attempts=self.max_attempts, paths=self._paths,
        )  # fmt: skip
        self._redo = deque(plan.waiting)
        for _ in range(plan.assigned):
            self._pending.popleft()
        if not plan.moves:
            return
        moves = plan.moves
        batches = [moves[i : i + self.batch] for i in range(0, len(moves), self.batch)]
        outcomes = await _gather(self._write(b) for b in batches)
        unknown = False
        for batch, outcome in zip(batches, outcomes, strict=True):
            if isinstance(outcome, _Deposed):
                raise outcome
            if isinstance(outcome, (ConnectionLoss, RequestTimeout)):
                unknown = True
            elif isinstance(outcome, MultiFailed):
                self._retry_batch(batch, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                self._applied(batch)
        if unknown:  # a batch may or may not have been applied: read the truth
            raise ConnectionLoss("outcome of an assignment batch unknown")

    async def _write(self, batch: Sequence[Move]) -> None:
        ops = [*self._guard]
        for move in batch:
            ops.extend(move.ops)
        try:
            await self._client.multi(ops)
        except MultiFailed as exc:
            if exc.index < len(self._guard):
                raise _Deposed(f"{exc.cause}") from exc
            raise
        except SessionExpired as exc:
            raise _Deposed("session expired") from exc

    def _applied(self, batch: Sequence[Move]) -> None:
        now = time.time()
        for move in batch:
            task, worker, redo = move.task, move.worker, move.redo
            if worker is None:
                self._finished[task] = now
                self.counts["dead"] += 1
                assert redo is not None
                log.warning("dispatcher: %s is dead after %d failed attempt(s): %s", task,
                            redo.charged, redo.reason or redo.last_error)  # fmt: skip
                continue
            if worker in self._views:
                self._views[worker].assigned.add(task)
            self.counts["assigned"] += 1
            if redo is not None:
                key = "reassigned" if move.previous is not None else "retried"
                self.counts[key] += 1
                log.info("dispatcher: %s %s to %s", task, key, worker)

    def _retry_batch(self, batch: Sequence[Move], exc: MultiFailed) -> None:
        """Nothing of the batch was applied: the move whose op failed is read again, the others
        go back to their queues."""
        refused = _refused_move(batch, exc.index - len(self._guard))
        if refused is not None:
            log.debug("dispatcher: move of %s refused (%s); reading it again", refused.task,
                      exc.cause)  # fmt: skip
        requeue = _requeue(batch, refused)
        self._redo.extendleft(reversed(requeue.redo))
        self._pending.extendleft(reversed(requeue.pending))
        self._wake.set()

    async def _remove_departed(self) -> None:
        """Remove the assignment directories of lost workers once their tasks have moved (a
        default worker id is host-pid: one directory per worker process ever run)."""
        if not self._departed:
            return
        client, paths = self._client, self._paths
        moving = {r.from_worker for r in self._redo}
        for worker in sorted(self._departed):
            if worker in self._views:  # back (a new registration of the id): it keeps it
                self._departed.discard(worker)
                continue
            if worker in moving:
                continue
            directory = f"{paths.assign}/{worker}"
            try:
                await client.multi([*self._guard, Op.delete(directory)])
            except MultiFailed as exc:
                if exc.index < len(self._guard):
                    raise _Deposed(str(exc.cause)) from exc
                if isinstance(exc.cause, NotEmpty):  # assignments we did not know of: move them
                    known = {r.task for r in self._redo}
                    try:
                        left = await client.children(directory)
                    except NoNode:
                        left = []
                    for task in left:
                        if task not in known:
                            reason = f"worker {worker} lost while running it"
                            self._redo.append(_Redo(task, worker, reason))
                    continue
            self._departed.discard(worker)
            log.info("dispatcher: removed the assignments directory of worker %s", worker)

    async def _cleanup(self) -> None:
        now = time.time()
        if now < self._next_cleanup:
            return
        self._next_cleanup = now + min(max(self.retention / 4, 1.0), 60.0)
        expired = [t for t, at in self._finished.items() if now - at >= self.retention]
        if not expired:
            return
        client, paths = self._client, self._paths

        async def remove(task: str) -> None:
            children = await client.children(paths.task(task))
            ops = [Op.delete(f"{paths.task(task)}/{c}") for c in children]
            try:
                await client.multi([*self._guard, *ops, Op.delete(paths.task(task))])
            except MultiFailed as exc:
                if exc.index < len(self._guard):
                    raise _Deposed(str(exc.cause)) from exc
                return  # changed meanwhile: next round
            self._finished.pop(task, None)
            self._known.discard(task)
            self.counts["cleaned"] += 1

        await _raise_first(await _gather(remove(t) for t in expired))
        log.info("dispatcher: cleaned up %d finished task(s)", len(expired))


async def _raise_first(results: Sequence[object]) -> None:
    for item in results:
        if isinstance(item, BaseException) and not isinstance(item, (NoNode, UnknownTask)):
            raise item


# -- worker ----------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class _Claim:
    """An assignment a worker took, and what fences its outcome."""

    task: str
    session: int  # the session it was taken on
    assigned_at: int  # the assignment's czxid: the zxid of the move that made it
    made_for: bytes  # the assignment's data (the czxid of the registration it was made for)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    #: the status version the move left (read at start, -1 before): fences the outcome
    status_version: int = -1
    settled: bool = False  # nothing to hand back (outcome written or refused, or nothing to run)


class Worker:
    """Runs tasks assigned to ``<root>/workers/<worker_id>`` through ``handler``, up to
    ``concurrency`` at once: ``await worker.run()``, until cancelled or ``stop()``.

    An outcome is written only if the task is still where this worker took it: the completion's
    multi() deletes the assignment and writes the status at the version the assigning move left,
    so a task moved meanwhile (even to a new worker of the same id, at the same path) is never
    completed by the worker it was taken from. Before running a task the worker marks its
    assignment started (one write): a task lost with its worker counts as a failed attempt only
    if it was started.

    LOST: the tasks running on the ended session are cancelled (the dispatcher moves them), and
    the worker registers again; if another process holds its id meanwhile (a replacement of the
    same id), it waits for that one to go, and ``stop()`` still ends it at once.

    Stopping (cancellation or ``stop()``) is graceful: the worker is marked draining (no new
    assignments), running tasks get ``grace`` seconds to finish, then they are cancelled and the
    worker waits for them to end (a handler in a thread cannot be interrupted: its task is not
    handed back while it still runs); what did not finish goes back to the queue.
    """

    def __init__(
        self,
        client: Client,
        handler: TaskHandler,
        root: str = "/rpc",
        *,
        worker_id: str | None = None,
        concurrency: int = 4,
        grace: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._client = client
        self._handler = handler
        self._paths = _Paths(root)
        self.id = _check_name("worker id", worker_id or f"{socket.gethostname()}-{os.getpid()}")
        self.concurrency = concurrency
        self.grace = grace
        self._running: dict[str, _Claim] = {}
        self._unsettled: list[_Claim] = []  # ended without an outcome after stop(): to hand back
        self._slots = anyio.Semaphore(concurrency)
        self._stopping = anyio.Event()
        self._follow_scope = anyio.CancelScope()
        self._changed = anyio.Event()
        self._registered = (0, 0)  # (session id, czxid of our worker node)
        self._task_ended = anyio.Event()
        self._drained = anyio.Event()
        #: outcomes so far: completed, failed, refused (assignment taken away), returned
        self.counts: dict[str, int] = dict.fromkeys(
            ("completed", "failed", "refused", "returned"), 0
        )

    @property
    def path(self) -> str:
        return self._paths.worker(self.id)

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._running)

    @property
    def registered(self) -> bool:
        """Whether this worker's node is held by the current session (and it is not stopping):
        the dispatcher can assign to it. No I/O."""
        session = self._registered[0]
        return session != 0 and session == self._client.session_id and not self._stopping.is_set()

    def stop(self) -> None:
        """Stop gracefully (``run()`` returns once finished or returned its tasks)."""
        self._stopping.set()
        self._changed.set()
        self._follow_scope.cancel()  # also a registration waiting for our id to be free

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Register, then run assigned tasks until cancelled or ``stop()``; reports the worker
        node's path to ``task_status`` once registered."""
        async with anyio.create_task_group() as tg:
            handlers: anyio.abc.TaskGroup = await tg.start(self._host_handlers)
            with listening(self._client, self._on_session):
                try:
                    with self._follow_scope:
                        await self._follow(handlers, task_status)
                finally:
                    with anyio.CancelScope(shield=True):
                        try:
                            await self._shutdown()
                        finally:
                            self._drained.set()

    async def _host_handlers(
        self, *, task_status: anyio.abc.TaskStatus[anyio.abc.TaskGroup]
    ) -> None:
        # Handlers live in a shielded group so that cancelling run() does not cancel them:
        # _shutdown gives them ``grace`` to finish first.
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as handlers:
                task_status.started(handlers)
                await self._drained.wait()

    def _on_session(self, event: SessionEvent) -> None:
        if event.state is SessionState.LOST:
            # every assignment we hold was made for the registration that went with the
            # session: the dispatcher moves them, their runs are void
            for claim in self._running.values():
                claim.scope.cancel()
            self._changed.set()

    async def _register(self) -> None:
        client, paths = self._client, self._paths
        info = {
            "capacity": self.concurrency, "draining": False,
            "host": socket.gethostname(), "pid": os.getpid(),
        }  # fmt: skip
        data = codec.dumps(info)
        await client.ensure_path(f"{paths.assign}/{self.id}")
        stat = await hold_ephemeral(client, self.path, data, log=log)
        self._registered = (stat.ephemeral_owner, stat.czxid)
        log.info("worker %s: registered (capacity %d)", self.id, self.concurrency)

    async def _follow(
        self, handlers: anyio.abc.TaskGroup, task_status: anyio.abc.TaskStatus[str]
    ) -> None:
        client = self._client
        directory = f"{self._paths.assign}/{self.id}"
        reported = need_directory = False

        def wake(_event: WatchEvent) -> None:
            self._changed.set()

        while not self._stopping.is_set():
            self._changed = anyio.Event()
            try:
                if self._registered[0] != client.session_id:
                    await self._register()  # a new session: register again
                    if not reported:
                        task_status.started(self.path)
                        reported = True
                elif need_directory:
                    await client.ensure_path(directory)
                need_directory = False
                names = await client.children(directory, watch=wake)
                fresh = [n for n in names if n not in self._running]
                replies = await _gather(client.get(f"{directory}/{n}") for n in fresh)
            except NoNode:  # our directory was removed (we were gone for a while): make it again
                need_directory = True
                continue
            except RETRYABLE:
                await client.wait_connected()
                continue
            session, mine = self._registered[0], str(self._registered[1])
            for name, reply in zip(fresh, replies, strict=True):
                if isinstance(reply, BaseException):
                    continue  # gone meanwhile, or the next listing sees it again
                data, stat = reply
                if data.decode(errors="replace") not in ("", mine):
                    continue  # made for an earlier registration: the dispatcher moves it
                if name in self._running:
                    continue  # started while we read
                claim = _Claim(name, session, stat.czxid, data)
                self._running[name] = claim
                handlers.start_soon(self._execute, claim)
            listed = set(names)
            for name, claim in list(self._running.items()):
                if name not in listed:
                    claim.scope.cancel()  # cancelled by its client, or moved: its outcome is void
            await self._changed.wait()

    async def _execute(self, claim: _Claim) -> None:
        task_id = claim.task
        try:
            with claim.scope:
                async with self._slots:
                    payload = await self._begin(claim)
                    if payload is None:
                        claim.settled = True
                        return
                    try:
                        result = await self._handler(Task(task_id, payload, self.id))
                        if not isinstance(result, bytes):
                            raise TypeError(f"handler returned {type(result).__name__}, not bytes")
                        error = trace = None
                    except Exception as exc:  # any handler error fails the attempt
                        result, error = b"", f"{type(exc).__name__}: {exc}"
                        trace = traceback.format_exc()
                    with anyio.CancelScope(shield=True):
                        try:
                            await self._finish(claim, result, error, trace)
                        except CoordError as exc:  # e.g. closed: the dispatcher moves it
                            log.error("worker %s: could not record the outcome of %s: %s",
                                      self.id, task_id, exc)  # fmt: skip
            if claim.scope.cancelled_caught:
                log.info("worker %s: %s stopped (its assignment went away)", self.id, task_id)
        finally:
            if self._running.get(task_id) is claim:
                del self._running[task_id]
            if not claim.settled and self._stopping.is_set():
                self._unsettled.append(claim)
            self._task_ended.set()

    async def _begin(self, claim: _Claim) -> bytes | None:
        """The task's payload, once the status version its assignment made is known and the
        assignment is marked started; None when there is nothing to run (the task is gone, or
        was moved or cancelled meanwhile, or the session it was taken on ended)."""
        client, paths = self._client, self._paths
        assignment = paths.assignment(self.id, claim.task)
        while client.session_id == claim.session:
            try:
                try:
                    payload, _ = await client.get(paths.task(claim.task))
                except NoNode:
                    log.warning("worker %s: %s no longer exists; dropping it", self.id, claim.task)
                    with contextlib.suppress(CoordError):
                        await client.delete(assignment)
                    return None
                _, status = await client.get(paths.status(claim.task))
                if status.mzxid != claim.assigned_at:
                    # the status changed after the move that made our assignment (moved or
                    # cancelled meanwhile): its version is not ours to complete with
                    log.info("worker %s: %s changed hands before it started", self.id, claim.task)
                    return None
                claim.status_version = status.version
                with contextlib.suppress(BadVersion):  # marked by an earlier try of ours
                    await client.set(assignment, claim.made_for, 0)
                return payload
            except NoNode:
                return None  # status or assignment gone: cancelled, returned or moved
            except RETRYABLE:
                await client.wait_connected()
        return None  # taken on a session that ended: the dispatcher moves it

    async def _finish(
        self, claim: _Claim, result: bytes, error: str | None, trace: str | None = None
    ) -> None:
        paths, task_id = self._paths, claim.task
        status = paths.status(task_id)
        # fenced twice: our assignment is still there, and the status is at the version the
        # move that made it left (a move to a new worker of our id makes the same path again)
        ops = [Op.delete(paths.assignment(self.id, task_id))]
        if error is None:
            ops += [
                Op.set_data(status, b"done", claim.status_version),
                Op.create(paths.result(task_id), result),
            ]
        else:
            ops += [
                Op.set_data(status, b"failed", claim.status_version),
                Op.create(paths.error(task_id), error.encode()[:65536], sequential=True),
            ]
            if trace is not None:  # right after its error: numbered N+1 (see the layout)
                ops.append(Op.create(paths.traceback(task_id), trace.encode()[-65536:],
                                     sequential=True))  # fmt: skip
        retried = False
        while True:
            try:
                await self._client.multi(ops)
                break
            except PayloadTooLarge as exc:
                if error is not None:
                    raise
                await self._finish(claim, b"", f"result too large: {exc}")
                return
            except MultiFailed as exc:
                if exc.index >= 2 and error is None:
                    # still ours, but the result cannot be written (a result node already
                    # there): a failed attempt, so the assignment goes and the dispatcher decides
                    await self._finish(claim, b"", f"completion refused: {exc.cause}")
                    return
                claim.settled = True
                why = "it was moved or cancelled" if exc.index < 2 else str(exc.cause)
                if retried:  # our first try may have been applied after all
                    why += " (or an earlier try whose reply was lost was applied)"
                log.warning("worker %s: completion of %s refused: %s", self.id, task_id, why)
                self.counts["refused"] += 1
                return
            except RETRYABLE:
                # applied or not: a second try is refused if the first one was
                await self._client.wait_connected()
                retried = True
        claim.settled = True
        if error is None:
            self.counts["completed"] += 1
            log.info("worker %s: completed %s", self.id, task_id)
        else:
            self.counts["failed"] += 1
            log.warning("worker %s: %s failed: %s", self.id, task_id, error)

    async def _wait_runs(self) -> None:
        while self._running:
            self._task_ended = anyio.Event()
            await self._task_ended.wait()

    async def _shutdown(self) -> None:
        self._stopping.set()
        with anyio.move_on_after(10), contextlib.suppress(CoordError):
            stat = await self._own_registration()
            if stat is not None:  # never another process's node of our id
                await self._client.set(
                    self.path, codec.dumps({"capacity": 0, "draining": True}), stat.version
                )
        with anyio.move_on_after(self.grace):
            await self._wait_runs()
        if self._running:
            for claim in self._running.values():
                claim.scope.cancel()
            await anyio.lowlevel.checkpoint()
            if self._running:
                log.warning("worker %s: waiting for %d handler(s) that do not stop when "
                            "cancelled (threads)", self.id, len(self._running))  # fmt: skip
            # a task is handed back only once its run ended: else it would run twice at once
            await self._wait_runs()
        with anyio.move_on_after(10), contextlib.suppress(CoordError):
            if self._client.state is SessionState.SUSPENDED:  # the session may come back:
                await self._client.delete_ephemeral(self.path)  # owed, paid only if ours
            elif self._client.state.live:
                await self._return_unfinished()
                # never a replacement's node of our id; owed when a reply is lost: a stopped
                # worker is not handed tasks
                await self._client.delete_ephemeral(self.path, only_ours=True)
        log.info("worker %s: stopped (%s)", self.id,
                 ", ".join(f"{k} {v}" for k, v in self.counts.items()))  # fmt: skip

    async def _own_registration(self) -> ZnodeStat | None:
        """Our worker node's stat if this session holds it (not a replacement of our id)."""
        stat = await self._client.exists(self.path)
        if stat is None or stat.ephemeral_owner != self._client.session_id:
            return None
        return stat

    async def _return_unfinished(self) -> None:
        """Give back what this worker took and did not finish, and what was assigned to it after
        it stopped taking tasks. Each return is fenced like a completion, so a task moved
        meanwhile (e.g. to a replacement of our id) is never taken from its new owner."""
        client, paths = self._client, self._paths
        claims = {c.task: c for c in self._unsettled}
        try:
            held = await client.children(f"{paths.assign}/{self.id}")
        except NoNode:
            held = []
        session, mine = self._registered[0], str(self._registered[1])
        for task in sorted(set(held) | set(claims)):
            assignment, status = paths.assignment(self.id, task), paths.status(task)
            try:
                claim = claims.get(task)
                if claim is None:  # assigned after we stopped taking tasks
                    data, stat = await client.get(assignment)
                    if data.decode(errors="replace") not in ("", mine):
                        continue  # made for another registration of our id
                    claim = _Claim(task, session, stat.czxid, data)
                if claim.status_version < 0:
                    _, stat = await client.get(status)
                    if stat.mzxid != claim.assigned_at:
                        continue  # moved or cancelled meanwhile
                    claim.status_version = stat.version
                await client.multi([Op.delete(assignment), Op.delete(status, claim.status_version)])
            except (MultiFailed, NoNode):
                continue
            self.counts["returned"] += 1
            log.info("worker %s: returned %s to the queue", self.id, task)
