"""What every command shares: --zk, --namespace, --session-timeout, --log-level, logging."""

from __future__ import annotations

import argparse
import logging
import os

DEFAULT_ZK = "127.0.0.1:2181"


def add_session_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ZooKeeper session")
    group.add_argument(
        "--zk",
        metavar="HOSTS",
        default=os.environ.get("AIOCOORD_ZK", DEFAULT_ZK),
        help="ZooKeeper hosts, host:port[,host:port...][/chroot] "
        f"(default: $AIOCOORD_ZK, else {DEFAULT_ZK})",
    )
    group.add_argument(
        "--namespace", metavar="PATH", default=None, help="chroot every path under PATH"
    )
    group.add_argument(
        "--session-timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="session timeout to ask for (the server bounds it; default 10)",
    )


def add_log_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=os.environ.get("AIOCOORD_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, or ``PORT``) -> (host, port); ValueError when malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = default_host, text
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT") from None
    if not 0 <= port < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, port


def read_data_argument(value: str) -> bytes:
    """A DATA argument: ``-`` reads stdin, ``@FILE`` reads a file, anything else is the text."""
    import sys

    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        with open(value[1:], "rb") as f:
            return f.read()
    return value.encode()
