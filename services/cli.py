# PYTHON_ARGCOMPLETE_OK
"""The ``aiocoord`` command: one entry point that dispatches to the services.

Errors end here: whatever a command raises is reported as one line on stderr,
``aiocoord <command>: error: <what>`` (with a hint where one helps), exit status 1 (2 for a
usage error); the traceback is logged only at ``--log-level debug``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence

import argcomplete
from argcomplete.shell_integration import shellcode

import aiocoord
from aiocoord import __version__

from . import (
    agent,
    app,
    config_cmd,
    demo,
    deploy,
    discovery_cmd,
    elect,
    lock_cmd,
    render,
    status_cmd,
    tasks_cmd,
    zk,
)
from .common import (
    CommandError,
    Parser,
    add_log_options,
    log_level,
    session_security,
    setup_logging,
)
from .metrics import add_metrics_option

log = logging.getLogger("aiocoord")


#: what /readyz means for each service (besides a live session)
READY = {
    "agent": "this agent is a candidate in its election, leading with the trigger port bound or "
    "standing by",
    "app": "a version is in place and verified (a newer one that failed leaves it in place)",
    "deploy": "a commit is checked out (a newer one that failed leaves it in place)",
    "render": "every template's file holds a render, checked and reloaded (a newer one that "
    "failed leaves it in place)",
    "elect": "this process is a candidate, leading or standing by (not in the backoff after "
    "CMD exited)",
    "register": "the instance is registered (its health check passes)",
    "discover": "the cache is fresh (--watch; not re-reading after the session was away)",
    "dispatcher": "the dispatcher runs, active or standing by",
    "worker": "the worker's node is registered on the current session",
}


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = Parser(
        prog="aiocoord",
        description="asyncio coordination on ZooKeeper: a local ZooKeeper, the HA runner, "
        "config distribution (agent, trigger, app, deploy, config), service discovery (register, "
        "discover), task dispatch (dispatcher, worker, submit, tasks), status, the demo. "
        "Every long-running command stops gracefully on SIGTERM/SIGINT. Shell completion: "
        "`aiocoord completion bash` (or zsh) prints the script to source.",
    )
    parser.add_argument("--version", action="version", version=f"aiocoord {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    zk.add_parser(sub)
    elect.add_parser(sub)
    lock_cmd.add_parser(sub)
    agent.add_parser(sub)
    config_cmd.add_parsers(sub)
    app.add_parser(sub)
    deploy.add_parser(sub)
    render.add_parser(sub)
    discovery_cmd.add_parsers(sub)
    tasks_cmd.add_parsers(sub)
    status_cmd.add_parser(sub)
    demo.add_parser(sub)
    completion = sub.add_parser(
        "completion",
        help="print the shell completion script (bash or zsh)",
        description="Print the completion script for SHELL: "
        'eval "$(aiocoord completion bash)" in ~/.bashrc, or zsh in ~/.zshrc.',
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    completion.set_defaults(func=print_completion)
    for name, ready in READY.items():
        add_metrics_option(sub.choices[name], ready)
    for each in parsers(parser):
        add_log_options(each)
        each.set_defaults(prog=each.prog)
    return parser


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from parsers(child)


def print_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(shellcode(["aiocoord"], shell=args.shell))
    return 0


def describe(exc: BaseException) -> tuple[str, str | None, int]:
    """What to say of an error: (one line, a hint or None, exit status)."""
    if isinstance(exc, CommandError):
        return str(exc), exc.hint, exc.status
    if isinstance(exc, aiocoord.ConnectError):
        return str(exc), "is ZooKeeper running there? --zk HOSTS or $AIOCOORD_ZK", 1
    if isinstance(exc, aiocoord.CoordError):
        return str(exc), None, 1
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", None, 1
    if isinstance(exc, (ValueError, TimeoutError)):
        return str(exc) or type(exc).__name__, None, 1
    return f"{type(exc).__name__}: {exc}", "a bug: --log-level debug shows where", 1


def report(prog: str, exc: BaseException) -> int:
    """The one line on stderr for ``exc`` (the traceback at debug level); its exit status."""
    log.debug("%s failed", prog, exc_info=exc)
    message, hint, status = describe(exc)
    first, *more = message.strip().splitlines() or [""]
    if more:  # (a server's log tail, say: at debug level)
        log.debug("the rest of the error:\n%s", "\n".join(more))
    line = f"{prog}: error: {first}" + (f" ({hint})" if hint else "")
    print(line, file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    setup_logging(log_level(args), getattr(args, "log_format", "text"))
    try:
        if hasattr(args, "zk_tls_ca"):  # a command with the session options: checked first
            args.zk_security = session_security(args)
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return report(args.prog, exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
