"""The programs the campaign runs as client processes (``python -m chaos.procs KIND ...``). Each
records its history to ``<rundir>/history/<name>.<incarnation>.jsonl``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiocoord
from aiocoord import (
    Client,
    ConnectionLoss,
    Counter,
    CounterOutcomeUnknown,
    Lock,
    LockHold,
    LockLost,
    MultiFailed,
    Op,
    OperationTimeout,
    RequestTimeout,
    Semaphore,
    ServiceRegistry,
    SessionExpired,
    SessionMoved,
    Task,
    TaskQueue,
)
from aiocoord.transport.types import SessionEvent, SetDataResult

from .history import Recorder

#: a write that ended with one of these may or may not have been applied
INDETERMINATE = (
    ConnectionLoss,
    OperationTimeout,
    SessionExpired,
    SessionMoved,
    RequestTimeout,
    TimeoutError,  # a bound of our own
    CounterOutcomeUnknown,  # a counter change whose reply was lost: applied once or not at all
)

SESSION_ROOT = "/chaos/session"
ELECTION_DATA = "/chaos/election-data"


def incarnation() -> int:
    return int(os.environ.get("AIOCOORD_CHAOS_INCARNATION", "1"))


def recorder(rundir: Path, name: str) -> Recorder:
    inc = incarnation()
    return Recorder(rundir / "history" / f"{name}.{inc}.jsonl", f"{name}.{inc}")


async def attempt(
    rec: Recorder, f: str, call: Callable[[], Awaitable[dict[str, Any]]], **value: Any
) -> dict[str, Any] | None:
    """Invoke ``call`` as operation ``f``; record ok with what it returns, fail or info."""
    op = rec.invoke(f, **value)
    try:
        result = await call()
    except INDETERMINATE as e:
        rec.complete("info", op, f, error=type(e).__name__)
        return None
    except (aiocoord.CoordError, MultiFailed) as e:
        rec.complete("fail", op, f, error=type(e).__name__)
        return None
    rec.complete("ok", op, f, **result)
    return result


def publish_credentials(zk: Client, rundir: Path, name: str) -> Callable[[SessionEvent], None]:
    """A session listener writing the session id and password for the nemesis's expiry."""
    path = rundir / "creds" / f"{name}.json"

    def listener(event: SessionEvent) -> None:
        if zk.session_id and event.state.name in ("CONNECTED", "RECONNECTED"):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "incarnation": incarnation(),
                        "session_id": zk.session_id,
                        "passwd": zk.session_password.hex(),
                    }
                )
            )
            tmp.replace(path)

    return listener


@contextlib.asynccontextmanager
async def expirable_client(args: argparse.Namespace) -> AsyncIterator[Client]:
    """A client whose session id and password the nemesis can read, to expire it."""
    async with Client(args.hosts, session_timeout=args.session_timeout) as zk:
        zk.add_listener(publish_credentials(zk, args.rundir, args.name))
        publish_credentials(zk, args.rundir, args.name)(SessionEvent(zk.state, zk.session_id))
        yield zk


# -- session: reads and writes of the process's own nodes, a shared node, protected creates ---


async def session(args: argparse.Namespace) -> None:
    name, inc = args.name, incarnation()
    rec = recorder(args.rundir, name)
    rng = random.Random(f"{name}-{inc}")
    node = f"{SESSION_ROOT}/{name}-{inc}"
    items = f"{node}-items"
    shared = f"{SESSION_ROOT}/shared"
    async with expirable_client(args) as zk:
        for path in (node, items, shared):
            while True:
                try:
                    await zk.ensure_path(path)
                    break
                except INDETERMINATE:
                    await asyncio.sleep(0.2)
        written = 0
        k = 0

        async def write() -> dict[str, Any]:
            stat = await zk.set(node, str(written).encode())
            return {"mzxid": stat.mzxid}

        async def read() -> dict[str, Any]:
            data, stat = await zk.get(node)
            return {"value": int(data or b"0"), "mzxid": stat.mzxid}

        async def write_shared() -> dict[str, Any]:
            stat = await zk.set(shared, f"{name}-{inc}-{k}".encode())
            return {"mzxid": stat.mzxid}

        async def read_shared() -> dict[str, Any]:
            _, stat = await zk.get(shared)
            return {"mzxid": stat.mzxid}

        async def create() -> dict[str, Any]:
            path = await zk.create(
                f"{items}/item-", f"{name}-{inc}-{k}".encode(), sequential=True, protected=True
            )
            return {"path": path}

        while True:
            k += 1
            kind = rng.choices(["write", "read", "write-shared", "read-shared", "create"])[0]
            if kind == "write":
                written += 1
                await attempt(rec, "write", write, value=written)
            elif kind == "read":
                await attempt(rec, "read", read)
            elif kind == "write-shared":
                await attempt(rec, "write-shared", write_shared)
            elif kind == "read-shared":
                await attempt(rec, "read-shared", read_shared)
            else:
                await attempt(rec, "create", create, uid=f"{name}-{inc}-{k}")
            await asyncio.sleep(rng.uniform(0.02, 0.1))


# -- leader: the CMD of an `aiocoord elect` runner -----------------------------------------------


async def leader(args: argparse.Namespace) -> None:
    """Journals its term (start, a beat every 0.1 s, stop on SIGTERM) and makes writes fenced by
    its candidate node: multi(check(AIOCOORD_LEADER_PATH), set(ELECTION_DATA))."""
    rec = recorder(args.rundir, f"{args.name}-cmd{os.getpid()}")
    token = int(os.environ["AIOCOORD_LEADER_TOKEN"])
    term_node = os.environ["AIOCOORD_LEADER_PATH"]
    rec.event("start", token=token, runner=args.name)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)

    async def beat() -> None:
        while True:
            rec.event("beat", token=token)
            await asyncio.sleep(0.1)

    beats = asyncio.create_task(beat())
    n = 0
    async with Client(args.hosts, session_timeout=args.session_timeout) as zk:
        while not stopping.is_set():
            n += 1

            async def fenced(n: int = n) -> dict[str, Any]:
                body = json.dumps({"token": token, "n": n}).encode()
                results = await zk.multi([Op.check(term_node), Op.set_data(ELECTION_DATA, body)])
                stat = results[1]
                assert isinstance(stat, SetDataResult)
                return {"mzxid": stat.stat.mzxid}

            await attempt(rec, "fenced-write", fenced, token=token, n=n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.3)
    rec.event("stop", token=token)
    beats.cancel()


# -- locker: holds a Lock (or a Semaphore lease) and writes through its guard --------------------

LOCK_ROOT = "/chaos/lock"
LOCK_DATA = "/chaos/lock-data"
SEMAPHORE_ROOT = "/chaos/semaphore"
SEMAPHORE_DATA = "/chaos/semaphore-data"


async def locker(args: argparse.Namespace) -> None:
    """Takes the lock (``--leases N``: a lease of an N-lease semaphore) again and again; while
    holding, makes a few writes through ``hold.guard``, each recorded with the hold's token (its
    node's czxid) and, when acknowledged, the mzxid the server applied it at."""
    name, inc = args.name, incarnation()
    rec = recorder(args.rundir, name)
    rng = random.Random(f"{name}-{inc}")
    data = SEMAPHORE_DATA if args.leases else LOCK_DATA
    async with expirable_client(args) as zk:
        holder: Lock | Semaphore = (
            Semaphore(zk, SEMAPHORE_ROOT, name, max_leases=args.leases)
            if args.leases
            else Lock(zk, LOCK_ROOT, name)
        )
        while True:
            token = 0
            try:
                async with holder as hold:
                    token = hold.token.czxid
                    rec.event("hold", token=token)
                    for n in range(rng.randint(2, 8)):
                        write = functools.partial(guarded_write, hold, data, n)
                        await attempt(rec, "guarded-write", write, token=token, n=n)
                        await asyncio.sleep(rng.uniform(0.02, 0.1))
                rec.event("release", token=token)
            except LockLost as e:
                rec.event("lost", token=token, error=str(e))
            except (aiocoord.CoordError, *INDETERMINATE) as e:
                rec.event("error", token=token, error=type(e).__name__)
            await asyncio.sleep(rng.uniform(0.05, 0.3))


async def guarded_write(hold: LockHold, data: str, n: int) -> dict[str, Any]:
    body = json.dumps({"token": hold.token.czxid, "n": n}).encode()
    (result,) = await hold.guard([Op.set_data(data, body)])
    assert isinstance(result, SetDataResult)
    return {"mzxid": result.stat.mzxid}


# -- counter: increments a shared Counter -------------------------------------------------------

COUNTER = "/chaos/counter"


async def counter(args: argparse.Namespace) -> None:
    """Adds 1 to the shared counter again and again; an acknowledged increment records the value
    it left."""
    name, inc = args.name, incarnation()
    rec = recorder(args.rundir, name)
    rng = random.Random(f"{name}-{inc}")
    async with expirable_client(args) as zk:
        shared = Counter(zk, COUNTER)

        async def increment() -> dict[str, Any]:
            async with asyncio.timeout(3 * args.session_timeout):
                change = await shared.add(1)
            return {"post": change.post_value}

        while True:
            await attempt(rec, "increment", increment)
            await asyncio.sleep(rng.uniform(0.02, 0.1))


# -- tasks: a submitter, and the workers' handler -------------------------------------------------

TASKS_ROOT = "/chaos/rpc"


async def submitter(args: argparse.Namespace) -> None:
    """Submits tasks with unique payloads; a submit that raised ConnectionLoss (the outcome could
    not be learned) is unknown."""
    name, inc = args.name, incarnation()
    rec = recorder(args.rundir, name)
    rng = random.Random(f"{name}-{inc}")
    async with expirable_client(args) as zk:
        queue = TaskQueue(zk, TASKS_ROOT)
        k = 0
        while True:
            k += 1
            uid = f"{name}-{inc}-{k}"

            async def submit(uid: str = uid) -> dict[str, Any]:
                async with asyncio.timeout(3 * args.session_timeout):
                    handle = await queue.submit(uid.encode())
                return {"task": handle.id}

            await attempt(rec, "submit", submit, uid=uid)
            await asyncio.sleep(rng.uniform(0.1, 0.4))


async def task_handler(task: Task) -> bytes:
    """The workers' handler: journals its start and end, takes 0.1-1.5 s, and returns which
    execution produced the result."""
    rundir = Path(os.environ["AIOCOORD_CHAOS_RUNDIR"])
    name = os.environ["AIOCOORD_CHAOS_NAME"]
    rec = _handler_recorders.get(name) or _handler_recorders.setdefault(
        name, recorder(rundir, name)
    )
    execution = f"{rec.process}-{next(_executions)}"
    rec.event("exec-start", task=task.id, execution=execution, worker=task.worker)
    await asyncio.sleep(random.uniform(0.1, 1.5))
    rec.event("exec-end", task=task.id, execution=execution)
    return json.dumps({"execution": execution, "payload": task.payload.decode()}).encode()


_handler_recorders: dict[str, Recorder] = {}
_executions = itertools.count(1)


# -- discovery: a watcher of the service's instances -----------------------------------------------

SERVICES = "/chaos/services"
SERVICE = "web"


async def watcher(args: argparse.Namespace) -> None:
    """Journals what its ServiceCache holds (``id:incarnation`` of each instance) whenever that
    changes (looked at every 50 ms), and its session's state changes."""
    rec = recorder(args.rundir, args.name)
    async with Client(args.hosts, session_timeout=args.session_timeout) as zk:
        zk.add_listener(lambda event: rec.event("session", state=event.state.name))
        async with ServiceRegistry(zk, SERVICES).discovery(SERVICE) as cache:
            last: list[str] | None = None
            while True:
                view = sorted(
                    f"{i.id}:{(i.payload or {}).get('incarnation')}" for i in cache.instances()
                )
                if view != last:
                    rec.event("view", instances=view)
                    last = view
                await asyncio.sleep(0.05)


PROGRAMS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, None]]] = {
    "session": session,
    "leader": leader,
    "submitter": submitter,
    "watcher": watcher,
    "locker": locker,
    "counter": counter,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.procs")
    parser.add_argument("kind", choices=sorted(PROGRAMS))
    parser.add_argument("--rundir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument("--leases", type=int, default=0, help="locker: a semaphore of N leases")
    args = parser.parse_args(argv)
    try:
        asyncio.run(PROGRAMS[args.kind](args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
