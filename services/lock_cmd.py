"""``aiocoord lock``: run a command while holding a lock (as ``consul lock``, ``etcdctl lock``).

Wait for the lock at --path (kazoo's layout: kazoo scripts using the same path contend with it),
or with --leases N for one of N leases of the semaphore at --path; run CMD while it is held, then
release it and exit with CMD's status (128+N when signal N killed it). CMD runs under the process
tree rules of ``aiocoord elect``: a process group of its own, stopped as a whole (SIGTERM, then
SIGKILL after --grace), and by a reaper process when this runner dies, SIGKILL included.

  The hold ends (disconnected, session lost, lock node deleted): stop CMD with a grace of at most
    1/6 of the session timeout (dead before the server can expire the session and hand the lock
    on; with --tolerate-suspended only when the session is lost), exit 1.
  SIGTERM/SIGINT: stop CMD (with --grace), release, exit 0.

CMD's environment: AIOCOORD_LOCK_TOKEN, the fencing token: the lock (or lease) node's czxid in
decimal, greater for each later holder; AIOCOORD_LOCK_PATH, that node's path on the server
(namespace included; it exists exactly while the hold lasts).

Exit status: CMD's; 1 on an error (ZooKeeper unreachable, --timeout passed, the hold lost, the
semaphore's stored leases differ from --leases); 127 when CMD is not found.
"""

from __future__ import annotations

import argparse
import math
import os

import anyio

import aiocoord

from .common import (
    CommandError,
    UsageError,
    add_id_option,
    session,
)
from .elect import (
    DEFAULT_GRACE,
    add_command_argument,
    add_runner_parser,
    add_stop_options,
    command_of,
    loss_grace,
    reaper,
    run_command,
    warn_of_a_cut_grace,
)


class LockError(CommandError):
    """Ends the runner with a one-line error and exit status 1."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_runner_parser(
        sub,
        "lock",
        __doc__,
        help="run a command while holding a lock (or one of N semaphore leases)",
        usage="%(prog)s --path P [--timeout S] [--leases N] [options] -- CMD [ARGS...]",
        path_help="the lock path; contenders are <path>/..__lock__<seq> (kazoo's Lock)",
    )
    add_id_option(p, "this runner's name in its lock node (default hostname:pid)")
    p.add_argument(
        "--leases", type=int, default=None, metavar="N",
        help="hold one of N leases of the semaphore at --path (kazoo's Semaphore) instead",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help="give up (exit 1) when not holding it SECONDS after the start (default: wait)",
    )  # fmt: skip
    add_stop_options(p, "losing the lock", "another holder's")
    add_command_argument(p, "holding the lock")
    p.set_defaults(func=main)


async def _run(args: argparse.Namespace, cmd: list[str]) -> int:
    identity = args.id or f"{os.uname().nodename}:{os.getpid()}"
    grace = DEFAULT_GRACE if args.grace is None else args.grace
    async with reaper() as reaper_, session(args) as zk:
        warn_of_a_cut_grace(args.grace, zk, "losing the lock")
        holder: aiocoord.Lock | aiocoord.Semaphore
        if args.leases is None:
            holder = aiocoord.Lock(
                zk, args.path, identity, tolerate_suspended=args.tolerate_suspended
            )
        else:
            holder = aiocoord.Semaphore(
                zk,
                args.path,
                identity,
                max_leases=args.leases,
                tolerate_suspended=args.tolerate_suspended,
            )
        waiting = anyio.CancelScope()
        if args.timeout is not None:
            waiting.deadline = anyio.current_time() + args.timeout
        with waiting:
            try:
                async with holder as hold:
                    waiting.deadline = math.inf  # held: --timeout is met
                    env = {
                        **os.environ,
                        "AIOCOORD_LOCK_TOKEN": str(hold.token.czxid),
                        "AIOCOORD_LOCK_PATH": zk.namespace.rstrip("/") + hold.path,
                    }
                    lost_grace = loss_grace(grace, zk.negotiated_timeout)
                    outcome = await run_command(cmd, env, reaper_, hold, grace, lost_grace)
            except aiocoord.LockLost as exc:
                raise LockError(f"the lock was lost while CMD ran (CMD stopped): {exc}") from exc
            except aiocoord.MaxLeasesMismatch as exc:
                raise LockError(str(exc)) from exc
            return outcome.status
        raise LockError(f"not holding {args.path} after {args.timeout:g}s (--timeout): gave up")


def main(args: argparse.Namespace) -> int:
    if args.leases is not None and args.leases < 1:
        raise UsageError("--leases must be at least 1")
    status = aiocoord.run(_run, args, command_of(args))
    return 0 if status is None else status
