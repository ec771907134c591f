"""``aiocoord dispatcher``, ``worker``, ``submit`` and ``tasks``: task dispatch from the command
line (the ``/rpc`` layout older kazoo scripts use)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import re
import sys
import time
from typing import Any

import anyio

import aiocoord

from .common import (
    CommandError,
    Parser,
    UsageError,
    add_id_option,
    add_json_option,
    add_path_option,
    add_session_options,
    arg_type,
    data_fields,
    print_json,
    read_data_argument,
    run_service,
    session,
    write_deadline,
)
from .metrics import counts, serving

log = logging.getLogger("aiocoord.tasks")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "dispatcher",
        help="the task dispatcher (one active, the others standby)",
        description="Contend for <path>/master; while active, assign pending tasks to live "
        "workers by free capacity, move the tasks of lost workers, retry failed tasks up to "
        "--max-attempts after a growing delay (then mark them dead), delete finished tasks "
        "after --retention.",
    )
    add_session_options(d)
    _add_root(d)
    add_id_option(d, "this dispatcher's name, stored in <path>/master (default host:pid)")
    d.add_argument(
        "--max-attempts", type=int, default=3, metavar="N",
        help="attempts of a task before it is marked dead (default 3)",
    )  # fmt: skip
    d.add_argument(
        "--retention", type=float, default=3600.0, metavar="SECONDS",
        help="finished tasks are deleted after SECONDS (default 3600)",
    )  # fmt: skip
    d.add_argument(
        "--retry-delay", type=float, default=1.0, metavar="SECONDS",
        help="a failed task waits this long before its next attempt, doubled after each "
        "further failure (default 1)",
    )  # fmt: skip
    d.add_argument(
        "--max-retry-delay", type=float, default=60.0, metavar="SECONDS",
        help="the longest retry delay (default 60)",
    )  # fmt: skip
    d.set_defaults(func=dispatcher_main)

    w = sub.add_parser(
        "worker",
        help="execute tasks",
        description="Register <path>/workers/<id> and run the tasks assigned to it, up to "
        "--concurrency at once. With no --handler the result is the payload itself (echo). "
        "SIGTERM: stop taking tasks, finish running ones within --grace, return the rest.",
    )
    add_session_options(w)
    _add_root(w)
    add_id_option(w, "this worker's id, the name of its node (default host-pid)")
    w.add_argument(
        "--concurrency", type=int, default=4, metavar="N",
        help="tasks run at once (default 4)",
    )  # fmt: skip
    w.add_argument(
        "--handler", default=None, metavar="MODULE:FUNCTION",
        help="runs each task: async def FUNCTION(task: aiocoord.Task) -> bytes, or a plain "
        "function (run in a thread); MODULE is imported from the current directory first; "
        "an exception fails the attempt and its traceback is kept with the error; default: "
        "echo the payload",
    )  # fmt: skip
    w.add_argument(
        "--shell", action="store_true",
        help="run each payload as a shell command (sh -c); its stdout is the result. Off unless "
        "given: anyone who can submit a task could run commands on this host",
    )  # fmt: skip
    w.add_argument(
        "--grace", type=float, default=30.0, metavar="SECONDS",
        help="on SIGTERM, time running tasks get to finish (default 30)",
    )  # fmt: skip
    w.set_defaults(func=worker_main)

    s = sub.add_parser(
        "submit",
        help="submit one task",
        description="Submit DATA as a task and print its id; with --wait, wait and print the "
        "result (exit 1 when the task is dead or cancelled).",
    )
    add_session_options(s, one_shot=True)
    _add_root(s)
    _add_wait_options(s, "wait for the result and print it")
    add_json_option(
        s,
        'print {"id": TASK} (with --wait {"id", "result", "encoding"}, the result '
        "as text, or base64 when it is not UTF-8)",
    )
    s.add_argument("data", metavar="DATA", help="the payload; - reads stdin, @FILE a file")
    s.set_defaults(func=submit_main)

    t = sub.add_parser(
        "tasks",
        help="task counts, states, results; cancel, requeue or purge tasks",
        description="With no COMMAND: how many tasks are in each state (`aiocoord tasks "
        "TASK...` is `aiocoord tasks status TASK...`).",
    )
    assert isinstance(t, Parser)
    t.default_commands = ("counts", "status")
    t_sub = t.add_subparsers(dest="tasks_command", metavar="COMMAND", parser_class=Parser)
    c = t_sub.add_parser(
        "counts", prog=t.prog, help="how many tasks are in each state (the default)",
        description="Print how many tasks are pending, assigned, failed, done, dead and "
        "cancelled.",
    )  # fmt: skip
    _add_tasks_options(c, "print one JSON object: counts by state")
    c.set_defaults(func=tasks_main, task_ids=[])
    st = t_sub.add_parser(
        "status", help="the state of each TASK (exit 1 when one is unknown)",
        description="Print the state of each TASK: pending, assigned, failed, done, dead, "
        "cancelled, or unknown (exit 1).",
    )  # fmt: skip
    _add_tasks_options(st, "print one JSON object: each TASK's state (null: unknown)")
    st.add_argument("task_ids", nargs="+", type=task_id, metavar="TASK",
                    help="task ids (task-NNNNNNNNNN)")  # fmt: skip
    st.set_defaults(func=tasks_main)

    def one_task(name: str, help: str, description: str, json_help: str) -> argparse.ArgumentParser:
        parser = t_sub.add_parser(name, help=help, description=description)
        _add_tasks_options(parser, json_help)
        parser.add_argument("task_id", type=task_id, metavar="TASK", help="the task id")
        return parser

    r = one_task("result", "print a finished task's result",
                 "Print TASK's result as it is (exit 1 when it is dead, cancelled, unknown, or "
                 "not finished: --wait waits for it).",
                 'print {"id", "result", "encoding"} (the result as text, or base64)')  # fmt: skip
    _add_wait_options(r, "wait until the task is finished")
    r.set_defaults(func=admin_main, action=_result)
    x = one_task("cancel", "cancel a pending or running task",
                 "Cancel TASK: a pending task never runs; a running one's worker is told (its "
                 "assignment goes) and its outcome is discarded. Either way the task ends "
                 "cancelled, so a waiter learns it. Exit 1 when it had finished already.",
                 'print {"id", "cancelled": true}')  # fmt: skip
    x.set_defaults(func=admin_main, action=_cancel)

    d = t_sub.add_parser(
        "dead", help="list dead tasks with their last error and traceback",
        description="List the dead tasks (failed --max-attempts times), oldest first, with "
        "their attempts, last error and the handler's traceback of that failure.",
    )  # fmt: skip
    _add_tasks_options(d, 'print one JSON object per task: {"id", "attempts", "error", '
                          '"traceback"}')  # fmt: skip
    d.set_defaults(func=admin_main, action=_dead)

    for name, what, does, json_help in (
        ("requeue", "queue dead tasks again",
         "Queue each dead TASK again (or --all): a new task with the same payload and fresh "
         "attempts replaces it; the new id is printed.",
         'print {"id", "requeued_as": NEW} per task'),
        ("purge", "delete dead tasks", "Delete each dead TASK (or --all) with its errors.",
         'print {"id"} per task purged'),
    ):  # fmt: skip
        a = t_sub.add_parser(name, help=what, description=does)
        _add_tasks_options(a, json_help)
        a.add_argument("--all", action="store_true", help="every dead task")
        a.add_argument("task_ids", nargs="*", type=task_id, metavar="TASK",
                       help="ids of dead tasks")  # fmt: skip
        a.set_defaults(func=admin_main, action=_requeue if name == "requeue" else _purge)


def _add_tasks_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    add_session_options(parser, one_shot=True)
    _add_root(parser)
    add_json_option(parser, json_help)


def _add_wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=what)
    parser.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help="with --wait: give up (exit 1) after SECONDS (default: wait)",
    )  # fmt: skip


def _add_root(parser: argparse.ArgumentParser) -> None:
    add_path_option(parser, "the task tree path (default /rpc)", aliases=["--root"],
                    required=False, default="/rpc")  # fmt: skip


# -- dispatcher --------------------------------------------------------------------------------
async def _dispatch(args: argparse.Namespace) -> None:
    async with session(args) as zk, serving(args, "dispatcher", zk) as metrics:
        dispatcher = aiocoord.Dispatcher(
            zk, args.path, identity=args.id, max_attempts=args.max_attempts,
            retention=args.retention, retry_delay=args.retry_delay,
            max_retry_delay=args.max_retry_delay,
        )  # fmt: skip
        metrics.collect("aiocoord_dispatcher_actions_total", "counter",
                        "what the dispatcher did: terms, assigned, reassigned, retried, dead, "
                        "cleaned", counts(lambda: dispatcher.counts), ["action"])  # fmt: skip
        metrics.collect("aiocoord_dispatcher_active", "gauge", "1 while the active dispatcher",
                        lambda: [((), dispatcher.active)])  # fmt: skip
        metrics.collect("aiocoord_dispatcher_tasks", "gauge",
                        "tasks the active dispatcher holds, by state",
                        counts(dispatcher.queue_sizes), ["state"])  # fmt: skip
        metrics.readiness(lambda: (True, "active" if dispatcher.active else "standing by"))
        await dispatcher.run()


def dispatcher_main(args: argparse.Namespace) -> int:
    return run_service(log, _dispatch, args)


# -- worker ------------------------------------------------------------------------------------
async def echo(task: aiocoord.Task) -> bytes:
    """The default handler: the result is the payload."""
    return task.payload


async def shell(task: aiocoord.Task) -> bytes:
    """``--shell``: run the payload with ``sh -c``; stdout is the result, a non-zero exit fails."""
    done = await anyio.run_process(["sh", "-c", task.payload.decode()], check=False)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"exit status {done.returncode}: {err}")
    return done.stdout


def load_handler(spec: str) -> aiocoord.TaskHandler:
    """``module:function`` -> the handler; ValueError naming what is wrong."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"bad --handler {spec!r}: expected MODULE:FUNCTION")
    # the current directory first, as Celery, RQ and uvicorn do: an installed ``aiocoord``
    # script's own directory is sys.path[0], not the directory it was started in
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--handler {spec}: cannot import {module_name}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"--handler {spec}: {module_name} has no function {name}")
    if inspect.iscoroutinefunction(function):
        return function  # type: ignore[no-any-return]

    async def in_thread(task: aiocoord.Task) -> bytes:
        result: bytes = await anyio.to_thread.run_sync(function, task)
        return result

    return in_thread


async def _work(args: argparse.Namespace, handler: aiocoord.TaskHandler) -> None:
    async with session(args) as zk, serving(args, "worker", zk) as metrics:
        seconds = metrics.histogram("aiocoord_task_seconds", "handler run time per task")

        async def timed(task: aiocoord.Task) -> bytes:
            started = time.perf_counter()
            try:
                return await handler(task)
            finally:
                seconds.observe(time.perf_counter() - started)

        worker = aiocoord.Worker(
            zk, timed, args.path, worker_id=args.id, concurrency=args.concurrency,
            grace=args.grace,
        )  # fmt: skip
        metrics.collect("aiocoord_worker_tasks_total", "counter",
                        "task outcomes: completed, failed, refused, returned",
                        counts(lambda: worker.counts), ["outcome"])  # fmt: skip
        metrics.collect("aiocoord_worker_running", "gauge", "tasks running now",
                        lambda: [((), len(worker.running))])  # fmt: skip
        metrics.readiness(lambda: (worker.registered, f"{worker.path} " + (
            "registered" if worker.registered else "not registered (yet, or again)")))  # fmt: skip
        await worker.run()


def worker_main(args: argparse.Namespace) -> int:
    if args.handler and args.shell:
        raise UsageError("--handler and --shell exclude each other")
    try:
        handler = shell if args.shell else load_handler(args.handler) if args.handler else echo
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.shell:
        log.warning("--shell: task payloads run as shell commands on this host")
    return run_service(log, _work, args, handler)


# -- submit / tasks ----------------------------------------------------------------------------
async def _submit(args: argparse.Namespace, payload: bytes) -> int:
    async with session(args) as zk:
        try:
            with anyio.fail_after(write_deadline(args)):
                handle = await aiocoord.TaskQueue(zk, args.path).submit(payload)
        except TimeoutError:
            raise CommandError(f"ZooKeeper did not answer within {write_deadline(args):g}s: "
                               "the task may or may not be queued",
                               hint="see `aiocoord tasks`") from None  # fmt: skip
        if not args.wait:
            if args.json:
                print_json({"id": handle.id})
            else:
                print(handle.id)
            return 0
        print(handle.id, file=sys.stderr)
        await _print_result(args, handle)
        return 0


async def _print_result(args: argparse.Namespace, handle: aiocoord.TaskHandle) -> None:
    """Wait (up to --timeout) for the task's result and print it; a dead or cancelled task is
    a one-line error (exit 1)."""
    try:
        with anyio.fail_after(args.timeout if args.timeout is not None else float("inf")):
            result = await handle.result()
    except TimeoutError:
        state = (await handle.status()).label
        raise CommandError(f"{handle.id}: no result within {args.timeout:g}s "
                           f"(still {state})") from None  # fmt: skip
    except aiocoord.TaskCancelled as exc:
        raise CommandError(str(exc)) from exc
    except aiocoord.TaskFailed as exc:
        raise CommandError(str(exc), hint="`aiocoord tasks dead` shows the traceback") from exc
    if args.json:
        shown = data_fields(result)  # "result", as ``submit --wait --json`` always said
        print_json({"id": handle.id, "result": shown["data"], "encoding": shown["encoding"]})
        return
    sys.stdout.buffer.write(result)
    if result and not result.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.write("\n")
    sys.stdout.flush()


def submit_main(args: argparse.Namespace) -> int:
    code = aiocoord.run(_submit, args, read_data_argument(args.data))
    return 1 if code is None else code


async def _tasks(args: argparse.Namespace) -> int:
    async with session(args) as zk:
        queue = aiocoord.TaskQueue(zk, args.path)
        if args.task_ids:
            states: dict[str, Any] = {}
            for task_id in args.task_ids:
                try:
                    states[task_id] = (await queue.handle(task_id).status()).label
                except aiocoord.UnknownTask:
                    states[task_id] = None
            if args.json:
                print_json(states)
            else:
                for task_id, state in states.items():
                    print(f"{task_id}  {state or 'unknown'}")
            return 0 if all(states.values()) else 1
        counts = {state.label: n for state, n in (await queue.counts()).items()}
        if args.json:
            print_json(counts)
        else:
            for state, n in counts.items():
                print(f"{state:<10} {n}")
        return 0


def tasks_main(args: argparse.Namespace) -> int:
    code = aiocoord.run(_tasks, args)
    return 1 if code is None else code


# -- tasks result / cancel / dead / requeue / purge -------------------------------------------
_TASK_ID = re.compile(r"task-\d{10}")


def _task_id(text: str) -> str:
    if not _TASK_ID.fullmatch(text):
        raise ValueError(f"bad task id {text!r}: expected task-<10 digits>")
    return text


#: argparse type of a TASK argument (checked before a session opens)
task_id = arg_type(_task_id)


def admin_main(args: argparse.Namespace) -> int:
    if args.action in (_requeue, _purge) and bool(args.task_ids) == args.all:
        raise UsageError("give TASK ids or --all (one of the two)")
    code = aiocoord.run(_admin, args)
    return 1 if code is None else code


async def _admin(args: argparse.Namespace) -> int:
    async with session(args) as zk:
        queue = aiocoord.TaskQueue(zk, args.path)
        try:
            await args.action(queue, args)
        except aiocoord.UnknownTask as exc:
            raise CommandError(f"{exc}", hint="finished tasks are deleted after the "
                               "dispatcher's --retention") from exc  # fmt: skip
        except aiocoord.TaskNotDead as exc:
            raise CommandError(str(exc), hint="`aiocoord tasks dead` lists the dead") from exc
    return 0


async def _result(queue: aiocoord.TaskQueue, args: argparse.Namespace) -> None:
    handle = queue.handle(args.task_id)
    state = await handle.status()
    if not state.finished and not args.wait:
        raise CommandError(f"{handle.id} is {state.label}: no result yet",
                           hint="--wait waits for it")  # fmt: skip
    await _print_result(args, handle)


async def _cancel(queue: aiocoord.TaskQueue, args: argparse.Namespace) -> None:
    handle = queue.handle(args.task_id)
    if not await handle.cancel():
        state = await handle.status()
        raise CommandError(f"{handle.id} is {state.label} already: not cancelled")
    if args.json:
        print_json({"id": handle.id, "cancelled": True})
    else:
        print(f"{handle.id} cancelled")


async def _dead(queue: aiocoord.TaskQueue, args: argparse.Namespace) -> None:
    for task in await queue.dead():
        if args.json:
            print_json({"id": task.id, "attempts": task.attempts, "error": task.error,
                        "traceback": task.traceback})  # fmt: skip
            continue
        print(f"{task.id}  {task.attempts} attempt(s)  {task.error}")
        for line in task.traceback.rstrip("\n").splitlines():
            print(f"    {line}")


async def _dead_ids(queue: aiocoord.TaskQueue, args: argparse.Namespace) -> list[str]:
    return [t.id for t in await queue.dead()] if args.all else list(args.task_ids)


async def _requeue(queue: aiocoord.TaskQueue, args: argparse.Namespace) -> None:
    for old in await _dead_ids(queue, args):
        new = await queue.handle(old).requeue()
        if args.json:
            print_json({"id": old, "requeued_as": new.id})
        else:
            print(f"{old} requeued as {new.id}")


async def _purge(queue: aiocoord.TaskQueue, args: argparse.Namespace) -> None:
    for task in await _dead_ids(queue, args):
        await queue.handle(task).purge()
        if args.json:
            print_json({"id": task})
        else:
            print(f"{task} purged")
