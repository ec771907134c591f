"""``aiocoord elect``: the HA runner. Runs a command only while this process leads an election.

Contend in the election at --path; while this process is one of the --leaders leaders, run CMD.
CMD runs in a process group of its own, and the runner stops the whole group: SIGTERM, then
SIGKILL once --grace seconds have passed with a process of the group still running.

  Leadership lost (disconnected, session lost, candidate node deleted): stop CMD, with a grace
    of at most 1/6 of the negotiated session timeout T. The runner notices a silent server 2/3 T
    after the last frame it received (plus one tick, at most T/10), and the server expires the
    session no sooner than T after it: CMD is dead before a standby can lead. Not so with
    --tolerate-suspended, which stops CMD only when the session is lost.
  SIGTERM/SIGINT: stop CMD (with --grace), resign, exit 0.
  The runner dies, even by SIGKILL: a small reaper process it started stops CMD's group (with
    the grace of a leadership loss).
  CMD exits: stop what is left of its group, resign, and contend again after 1 s, twice as long
    after each exit up to --max-backoff, back to 1 s after a run of --max-backoff or longer.
    With --once, exit with CMD's status instead.

CMD must not daemonize: a process that calls setsid() or setpgid() leaves the group and is not
stopped. A paused runner (SIGSTOP, a long GC pause, a frozen VM) cannot stop CMD: its session
expires, a standby's CMD starts while this one still runs. Fence what CMD writes with its token.

CMD's environment: AIOCOORD_LEADER_TOKEN, the fencing token: the candidate node's czxid in
decimal (greater in each later term); AIOCOORD_LEADER_PATH, the candidate node's path on the
server (namespace included; it exists exactly while the term lasts); AIOCOORD_LEADER_RANK, 0 to
N-1 among the --leaders N.

Exit status: 0 after SIGTERM/SIGINT; with --once, CMD's (128+N when a signal N killed it); 1 on
an error (ZooKeeper unreachable, --timeout passed, leadership lost under --once); 127 when CMD is
not found. Candidates are <path>/worker<seq> ephemeral-sequential nodes, shared with
kazoo/zkpython scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import logging
import math
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import anyio

import aiocoord

from .common import (
    CommandError,
    UsageError,
    add_id_option,
    add_path_option,
    add_session_options,
    description,
    session,
)
from .metrics import Leadership, serving
from .reaper import SCRIPT, group_alive, signal_group

log = logging.getLogger("aiocoord.elect")

_PR_SET_PDEATHSIG = 1
DEFAULT_GRACE = 10.0
#: on leadership loss the grace is at most this share of the negotiated session timeout
LOSS_GRACE_SHARE = 1 / 6
FIRST_RESTART_DELAY = 1.0
_POLL = 0.05  # how often a stopping group is looked at
_REAP_LIMIT = 5.0  # how long a killed CMD may take to be reaped


class ElectError(CommandError):
    """Ends the runner with a one-line error and exit status 1."""


def add_runner_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    doc: str | None,
    *,
    help: str,
    usage: str,
    path_help: str,
) -> argparse.ArgumentParser:
    """The parser of a command that runs CMD while holding something (``elect``, ``lock``):
    the session and --path options; ``add_command_argument`` ends it."""
    p = sub.add_parser(
        name,
        help=help,
        description=description(doc),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=usage,
    )
    add_session_options(p)
    add_path_option(p, path_help)
    return p


def add_stop_options(p: argparse.ArgumentParser, loss: str, other: str) -> None:
    """--grace and --tolerate-suspended: how CMD is stopped on ``loss``."""
    p.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"SIGTERM to SIGKILL ({DEFAULT_GRACE:g}); on {loss} at most 1/6 of the "
        "session timeout (a warning says so when SECONDS is more)",
    )
    p.add_argument(
        "--tolerate-suspended",
        action="store_true",
        help=f"keep CMD running while disconnected, until the session is lost (then {other} "
        "CMD may already run: fence CMD's writes)",
    )


def add_command_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...",
        help=f"the command to run while {what}, after --",
    )  # fmt: skip


def command_of(args: argparse.Namespace) -> list[str]:
    """CMD, as given after --: a usage error when missing, status 127 when not found."""
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("no command given", hint="put it after --")
    if shutil.which(cmd[0]) is None:
        raise CommandError(f"command not found: {cmd[0]}", status=127)
    return cmd


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_runner_parser(
        sub,
        "elect",
        __doc__,
        help="run a command only while this process leads an election",
        usage="%(prog)s --path P [options] -- CMD [ARGS...]",
        path_help="the election path; candidates are <path>/worker<seq>",
    )
    p.add_argument(
        "--leaders", type=int, default=1, metavar="N",
        help="how many candidates lead (and run CMD) at once (default 1)",
    )  # fmt: skip
    add_id_option(p, "this runner's name in its candidate node (default hostname:pid)")
    add_stop_options(p, "leadership loss", "a standby's")
    p.add_argument(
        "--once",
        action="store_true",
        help="run CMD once while leading, then resign and exit with CMD's status",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up (exit 1) when not leading SECONDS after the start (default: wait)",
    )
    p.add_argument(
        "--max-backoff",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="longest wait before contending again after CMD exited (60)",
    )
    add_command_argument(p, "leading")
    p.set_defaults(func=main)


def loss_grace(grace: float, session_timeout: float) -> float:
    """The SIGTERM-to-SIGKILL grace on leadership loss: CMD must be dead before the server can
    expire the session (see the module docstring for the arithmetic)."""
    return min(grace, session_timeout * LOSS_GRACE_SHARE)


def warn_of_a_cut_grace(grace: float | None, zk: aiocoord.Client, loss: str) -> None:
    """Warn when --grace is more than the grace on ``loss`` can be."""
    bound = loss_grace(math.inf, zk.negotiated_timeout)
    if grace is not None and grace > bound:
        log.warning(
            "--grace %g: on %s CMD is killed after %.2fs (1/6 of the %gs session timeout), so "
            "that it is dead before the session can expire",
            grace,
            loss,
            bound,
            zk.negotiated_timeout,
        )


def exit_status(returncode: int) -> int:
    """A process's status as a shell gives it: 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


def _die_with_parent(parent: int) -> Callable[[], None]:
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None

    def preexec() -> None:  # runs in the child between fork and exec
        os.setpgrp()
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(1)

    return preexec


class Reaper:
    """The reaper process (``services/reaper.py``): told which process group CMD runs in, it
    stops that group when the runner dies and closes its end of the pipe, SIGKILL included."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    def watch(self, pgid: int, grace: float) -> None:
        """The group to stop (0: none) and its grace. No await: nothing can cancel it."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{pgid} {grace!r}\n".encode())


@asynccontextmanager
async def reaper() -> AsyncIterator[Reaper]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", SCRIPT, stdin=asyncio.subprocess.PIPE
    )
    try:
        yield Reaper(proc)
    finally:
        with anyio.CancelScope(shield=True):
            assert proc.stdin is not None
            proc.stdin.close()  # EOF: the reaper stops the group it was last told of, and exits
            with anyio.move_on_after(_REAP_LIMIT):
                await proc.wait()


class Held(Protocol):
    """What CMD runs under: a term of leadership, a held lock. ``lost`` is set when it ends."""

    lost: str | None


async def _stop(
    proc: asyncio.subprocess.Process, grace: float, lost_grace: float, term: Held
) -> None:
    """Stop CMD's process group: SIGTERM, then SIGKILL after ``grace``, or ``lost_grace`` after
    the term was found lost (also while stopping: a shutdown met by a partition)."""
    pgid = proc.pid
    with anyio.CancelScope(shield=True):
        if group_alive(pgid):
            log.info("stopping command (process group %d): SIGTERM", pgid)
            signal_group(pgid, signal.SIGTERM)
            now = started = anyio.current_time()
            deadline, lost = now + grace, False
            while group_alive(pgid):
                if not lost and term.lost is not None:
                    lost = True
                    deadline = min(deadline, now + lost_grace)
                if now >= deadline:
                    log.warning(
                        "command (process group %d) still running after %.1fs: SIGKILL",
                        pgid,
                        now - started,
                    )
                    signal_group(pgid, signal.SIGKILL)
                    break
                await anyio.sleep(_POLL)
                now = anyio.current_time()
        with anyio.move_on_after(_REAP_LIMIT):
            await proc.wait()
    log.info("command stopped (exit %s)", proc.returncode)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run of CMD ended: its exit status and how long it ran."""

    status: int
    ran: float


class Runner:
    """Runs CMD for a leadership term."""

    def __init__(
        self,
        args: argparse.Namespace,
        cmd: list[str],
        zk: aiocoord.Client,
        reaper: Reaper,
        leadership: Leadership,
    ) -> None:
        self._args = args
        self._cmd = cmd
        self._zk = zk
        self._reaper = reaper
        self._leadership = leadership
        self.grace = DEFAULT_GRACE if args.grace is None else args.grace

    def loss_grace(self) -> float:
        return loss_grace(self.grace, self._zk.negotiated_timeout)

    def _environment(self, term: aiocoord.Term) -> dict[str, str]:
        namespace = self._zk.namespace.rstrip("/")
        return {
            **os.environ,
            "AIOCOORD_LEADER_TOKEN": str(term.token.czxid),
            "AIOCOORD_LEADER_PATH": namespace + term.path,
            "AIOCOORD_LEADER_RANK": str(term.rank),
        }

    async def lead(self, term: aiocoord.Term) -> Outcome:
        log.info("leading (rank %d, token %d): starting %s", term.rank, term.token.czxid, self._cmd)
        return await run_command(
            self._cmd,
            self._environment(term),
            self._reaper,
            term,
            self.grace,
            self.loss_grace(),
            self._leadership.term(self._args.path),
        )


async def run_command(
    cmd: list[str],
    env: Mapping[str, str],
    reaper: Reaper,
    held: Held,
    grace: float,
    lost_grace: float,
    around: AbstractContextManager[object] | None = None,
) -> Outcome:
    """Run CMD in a process group of its own while ``held`` lasts (the caller cancels this when
    it ends), the reaper told of the group; stop the whole group on the way out (SIGTERM, then
    SIGKILL after ``grace``, ``lost_grace`` once ``held`` is lost). 127 when CMD cannot start."""
    with anyio.CancelScope(shield=True):  # a started CMD is always stopped by the finally
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, env=dict(env), preexec_fn=_die_with_parent(os.getpid())
            )
        except OSError as exc:
            log.error("cannot start %s: %s", cmd[0], exc)
            return Outcome(127, 0.0)
    started = anyio.current_time()
    try:
        reaper.watch(proc.pid, lost_grace)
        with around if around is not None else nullcontext():
            await proc.wait()
    finally:
        await _stop(proc, grace, lost_grace, held)
        reaper.watch(0, 0.0)
    assert proc.returncode is not None
    return Outcome(exit_status(proc.returncode), anyio.current_time() - started)


async def _run(args: argparse.Namespace, cmd: list[str]) -> int:
    identity = args.id or f"{os.uname().nodename}:{os.getpid()}"
    async with (
        reaper() as reaper_,
        session(args) as zk,
        serving(args, "elect", zk) as metrics,
    ):
        leadership = Leadership(metrics)
        runner = Runner(args, cmd, zk, reaper_, leadership)
        warn_of_a_cut_grace(args.grace, zk, "leadership loss")
        election = aiocoord.Election(
            zk,
            args.path,
            leaders=args.leaders,
            identity=identity,
            tolerate_suspended=args.tolerate_suspended,
        )
        metrics.readiness(lambda: leadership.readiness(election))
        log.info("contending at %s as %s", args.path, identity)
        waiting = anyio.CancelScope()
        if args.timeout is not None:
            waiting.deadline = anyio.current_time() + args.timeout

        async def lead(term: aiocoord.Term) -> Outcome:
            waiting.deadline = math.inf  # leading: --timeout is met
            return await runner.lead(term)

        with waiting:
            if args.once:
                try:
                    async with election.lead() as term:
                        outcome = await lead(term)
                except aiocoord.LeadershipLost as exc:
                    raise ElectError(f"leadership lost while CMD ran (CMD stopped): {exc}") from exc
                log.info("command exited with %d: resigned", outcome.status)
                return outcome.status
            delay = FIRST_RESTART_DELAY
            while True:
                outcome = await election.run(lead)
                if outcome.ran >= args.max_backoff:
                    delay = FIRST_RESTART_DELAY  # it ran well for a while: a fresh failure
                log.warning(
                    "command exited with %d after %.1fs: resigned, contending again in %gs",
                    outcome.status,
                    outcome.ran,
                    delay,
                )
                await anyio.sleep(delay)  # let a standby take its turn first
                delay = min(delay * 2, args.max_backoff)
        raise ElectError(f"not leading after {args.timeout:g}s (--timeout): gave up")


def main(args: argparse.Namespace) -> int:
    status = aiocoord.run(_run, args, command_of(args))
    log.info("stopped")
    return 0 if status is None else status
