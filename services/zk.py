"""``aiocoord zk start``: a local ZooKeeper (or ensemble) from the installed jars, in the
foreground, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from aiocoord.testing import PortInUse, ZooKeeperEnsemble, ZooKeeperNotFound, ZooKeeperServer

from . import znode
from .common import CommandError, add_json_option, print_json

log = logging.getLogger("aiocoord.zk")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    zk = sub.add_parser(
        "zk",
        help="a local ZooKeeper server or ensemble, and the znode commands",
        description="start: a local ZooKeeper; get, set, create, ls, tree, rm, stat, watch: "
        "read and write znodes.",
    )
    zk_sub = zk.add_subparsers(dest="zk_command", required=True, metavar="COMMAND")
    start = zk_sub.add_parser(
        "start",
        help="start ZooKeeper in the foreground until SIGTERM/SIGINT",
        description="Start a local ZooKeeper from the installed jars (Debian package "
        "`zookeeper`), in the foreground. With --ensemble N, N quorum members on consecutive "
        "client ports from --port. Data lives in --data-dir (default: a temporary directory "
        "removed on exit).",
    )
    start.add_argument(
        "--port", type=int, default=2181, metavar="PORT",
        help="client port on 127.0.0.1, refused when another program holds it (default 2181)",
    )  # fmt: skip
    start.add_argument(
        "--ensemble", type=int, default=1, metavar="N",
        help="number of quorum members, on client ports PORT to PORT+N-1 (default 1)",
    )  # fmt: skip
    start.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="keep the data in DIR (default: a temporary directory removed on exit)",
    )  # fmt: skip
    add_json_option(start, 'print {"hosts": HOSTS} instead of the bare connect string')
    start.set_defaults(func=run_start)
    znode.add_parsers(zk_sub)


def run_start(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server: ZooKeeperServer | ZooKeeperEnsemble
    if args.ensemble > 1:
        ports = [args.port + i for i in range(args.ensemble)]
        server = ZooKeeperEnsemble(args.ensemble, data_dir=args.data_dir, client_ports=ports)
    else:
        server = ZooKeeperServer(args.port, data_dir=args.data_dir)
    try:
        server.start()
    except BaseException as exc:
        server.close()
        if isinstance(exc, PortInUse):
            raise CommandError(str(exc), hint="choose another with --port") from exc
        if isinstance(exc, ZooKeeperNotFound):
            raise CommandError(str(exc)) from exc
        if isinstance(exc, (TimeoutError, RuntimeError)):
            raise CommandError(f"ZooKeeper did not start: {exc}",
                               hint="--log-level debug shows its log") from exc  # fmt: skip
        raise
    try:
        log.info("ZooKeeper serving at %s (Ctrl-C or SIGTERM to stop)", server.hosts)
        if args.json:
            print_json({"hosts": server.hosts})
        else:
            print(server.hosts, flush=True)
        stop.wait()
        log.info("stopping ZooKeeper")
    finally:
        server.close()
    return 0
