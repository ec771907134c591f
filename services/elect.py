"""``aiocoord elect``: the HA runner. Runs a command only while this process leads an election.

On leadership loss the command gets SIGTERM, then SIGKILL after ``--grace`` seconds. When the
command exits by itself, the runner resigns (so a standby takes over) and contends again. On
SIGTERM/SIGINT the runner stops the command, resigns and closes its session. The command never
outlives the runner, even a runner killed with SIGKILL (Linux PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable

import anyio

import aiocoord

from .common import add_session_options, run_service, session
from .metrics import leading, serving

log = logging.getLogger("aiocoord.elect")

_PR_SET_PDEATHSIG = 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "elect",
        help="run a command only while this process leads an election",
        description="Contend in the election at --path; while this process is one of the "
        "--leaders leaders, run CMD. Leadership lost: CMD gets SIGTERM, then SIGKILL after "
        "--grace seconds. CMD exited: resign and contend again. SIGTERM/SIGINT: stop CMD, "
        "resign, exit 0. Candidates are <path>/worker<seq> ephemeral-sequential nodes, shared "
        "with kazoo/zkpython scripts.",
        usage="%(prog)s --path P [options] -- CMD [ARGS...]",
    )
    add_session_options(p)
    p.add_argument("--path", required=True, help="election znode path")
    p.add_argument("--leaders", type=int, default=1, metavar="N", help="leaders at once (1)")
    p.add_argument("--identity", default=None, help="stored in the candidate node (hostname:pid)")
    p.add_argument(
        "--grace", type=float, default=10.0, metavar="SECONDS", help="SIGTERM to SIGKILL (10)"
    )
    p.add_argument(
        "--tolerate-suspended",
        action="store_true",
        help="keep CMD running while disconnected, until the session is lost",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    p.set_defaults(func=main)


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


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    if proc.returncode is not None:
        return
    log.info("stopping command (pid %d): SIGTERM", proc.pid)
    with anyio.CancelScope(shield=True):
        proc.terminate()
        with anyio.move_on_after(grace):
            await proc.wait()
        if proc.returncode is None:
            log.warning("command (pid %d) still running after %gs: SIGKILL", proc.pid, grace)
            proc.kill()
            await proc.wait()
    log.info("command stopped (exit %s)", proc.returncode)


async def _run(args: argparse.Namespace, cmd: list[str]) -> None:
    identity = args.identity or f"{os.uname().nodename}:{os.getpid()}"
    async with (
        session(args) as zk,
        serving(args, "elect", zk) as metrics,
    ):
        election = aiocoord.Election(
            zk,
            args.path,
            leaders=args.leaders,
            identity=identity,
            tolerate_suspended=args.tolerate_suspended,
        )
        log.info("contending at %s as %s", args.path, identity)

        async def lead(term: aiocoord.Term) -> int:
            log.info("leading (rank %d, token 0x%x): starting %s", term.rank, term.token.czxid, cmd)
            proc = await asyncio.create_subprocess_exec(
                *cmd, preexec_fn=_die_with_parent(os.getpid())
            )
            try:
                with leading(metrics, args.path):
                    code = await proc.wait()
            finally:
                await _stop(proc, args.grace)
            return code

        while True:
            code = await election.run(lead)
            log.warning("command exited with %d: resigned, contending again", code)
            await anyio.sleep(1.0)  # let a standby take its turn first


def main(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("aiocoord elect: no command given (put it after --)", file=sys.stderr)
        return 2
    return run_service(log, _run, args, cmd)
