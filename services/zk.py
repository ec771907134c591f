"""``aiocoord zk start``: a local ZooKeeper (or ensemble) from the installed jars, in the
foreground, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from aiocoord.testing import ZooKeeperEnsemble, ZooKeeperNotFound, ZooKeeperServer

log = logging.getLogger("aiocoord.zk")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    zk = sub.add_parser("zk", help="run a local ZooKeeper server or ensemble")
    zk_sub = zk.add_subparsers(dest="zk_command", required=True, metavar="COMMAND")
    start = zk_sub.add_parser(
        "start",
        help="start ZooKeeper in the foreground until SIGTERM/SIGINT",
        description="Start a local ZooKeeper from the installed jars (Debian package "
        "`zookeeper`), in the foreground. With --ensemble N, N quorum members on consecutive "
        "client ports from --port. Data lives in --data-dir (default: a temporary directory "
        "removed on exit).",
    )
    start.add_argument("--port", type=int, default=2181, help="client port (default 2181)")
    start.add_argument(
        "--ensemble", type=int, default=1, metavar="N", help="number of members (default 1)"
    )
    start.add_argument("--data-dir", default=None, metavar="DIR", help="keep data in DIR")
    start.set_defaults(func=run_start)


def run_start(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server: ZooKeeperServer | ZooKeeperEnsemble
    try:
        if args.ensemble > 1:
            ports = [args.port + i for i in range(args.ensemble)]
            server = ZooKeeperEnsemble(args.ensemble, data_dir=args.data_dir, client_ports=ports)
        else:
            server = ZooKeeperServer(args.port, data_dir=args.data_dir)
        server.start()
    except ZooKeeperNotFound as exc:
        log.error("%s", exc)
        return 2
    except (TimeoutError, RuntimeError) as exc:
        log.error("ZooKeeper did not start: %s", exc)
        return 1
    try:
        log.info("ZooKeeper serving at %s (Ctrl-C or SIGTERM to stop)", server.hosts)
        print(server.hosts, flush=True)
        stop.wait()
        log.info("stopping ZooKeeper")
    finally:
        server.close()
    return 0
