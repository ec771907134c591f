"""The ``aiocoord`` command: one entry point that dispatches to the services."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiocoord import __version__

from . import (
    agent,
    app,
    config_cmd,
    demo,
    deploy,
    discovery_cmd,
    elect,
    status_cmd,
    tasks_cmd,
    zk,
)
from .common import add_log_option, setup_logging
from .metrics import add_metrics_option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiocoord",
        description="asyncio coordination on ZooKeeper: a local ZooKeeper, the HA runner, "
        "config distribution (agent, trigger, app, deploy, config), service discovery (register, "
        "discover), task dispatch (dispatcher, worker, submit, tasks), status, the demo. "
        "Every long-running command stops gracefully on SIGTERM/SIGINT.",
    )
    parser.add_argument("--version", action="version", version=f"aiocoord {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    zk.add_parser(sub)
    elect.add_parser(sub)
    agent.add_parser(sub)
    config_cmd.add_parsers(sub)
    app.add_parser(sub)
    deploy.add_parser(sub)
    discovery_cmd.add_parsers(sub)
    tasks_cmd.add_parsers(sub)
    status_cmd.add_parser(sub)
    demo.add_parser(sub)
    for name in ("agent", "app", "deploy", "elect", "register", "discover", "dispatcher", "worker"):
        add_metrics_option(sub.choices[name])
    for command in sub.choices.values():
        for leaf in _leaves(command):
            add_log_option(leaf)
    return parser


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that take options: every command, every subcommand of a group."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [parser]
    return [leaf for g in groups for p in g.choices.values() for leaf in _leaves(p)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
