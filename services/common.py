"""What every command shares: --zk, --namespace, --session-timeout, --log-level, logging."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable

import aiocoord
from aiocoord.transport import codec

from .metrics import Metrics

DEFAULT_ZK = "127.0.0.1:2181"


#: how long a one-shot command waits for its first connection by default
ONE_SHOT_CONNECT_TIMEOUT = 5.0


def add_session_options(parser: argparse.ArgumentParser, *, one_shot: bool = False) -> None:
    """The session options; ``one_shot`` commands fail fast when ZooKeeper cannot be reached
    (a service waits up to its session timeout)."""
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
    group.add_argument(
        "--connect-timeout",
        metavar="SECONDS",
        type=float,
        default=ONE_SHOT_CONNECT_TIMEOUT if one_shot else None,
        help="give up when no ZooKeeper host answers within this (default "
        + (f"{ONE_SHOT_CONNECT_TIMEOUT:g}" if one_shot else "the session timeout")
        + ")",
    )


def session(args: argparse.Namespace) -> aiocoord.Client:
    """The client for the options of ``add_session_options`` (``async with session(args)``)."""
    return aiocoord.Client(
        args.zk,
        namespace=args.namespace,
        session_timeout=args.session_timeout,
        connect_timeout=args.connect_timeout,
    )


def write_deadline(args: argparse.Namespace) -> float:
    """How long a one-shot command's write (publish, rollback, submit) waits through a
    disconnection before it gives up with its outcome unknown: twice the session timeout."""
    return 2 * float(args.session_timeout)


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


def print_json(value: object) -> None:
    """One JSON line on stdout, flushed (for scripts reading as it comes)."""
    sys.stdout.write(codec.dumps(value).decode() + "\n")
    sys.stdout.flush()


def read_data_argument(value: str) -> bytes:
    """A DATA argument: ``-`` reads stdin, ``@FILE`` reads a file, anything else is the text."""
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        with open(value[1:], "rb") as f:
            return f.read()
    return value.encode()


def run_service(
    log: logging.Logger,
    main: Callable[..., Awaitable[object]],
    *args: object,
    errors: tuple[type[Exception], ...] = (aiocoord.ConnectError,),
    say_stopped: bool = True,
) -> int:
    """Run a service's ``main(*args)`` until it ends or SIGTERM/SIGINT: 0, or 1 after logging
    one of ``errors``."""
    try:
        aiocoord.run(main, *args)
    except errors as exc:
        log.error("%s", exc)
        return 1
    if say_stopped:
        log.info("stopped")
    return 0


class StatusReporter:
    """Reports this host's status on a ``StatusBoard``, and reports the last one again on every
    new session (the ephemeral status node went with the lost one): run ``keep()`` in a task."""

    def __init__(
        self,
        client: aiocoord.Client,
        board: aiocoord.StatusBoard,
        host: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        self._board = board
        self.host = host
        self._last: tuple[str | None, bool, str | None] | None = None
        self._metrics = metrics
        if metrics is not None:
            metrics.describe("aiocoord_config_applied_total", "counter", "versions applied")
            metrics.describe("aiocoord_config_apply_failures_total", "counter",
                             "versions that failed to apply (the previous one stays)")  # fmt: skip

    async def report(self, version: str | None, ok: bool, error: str | None = None) -> None:
        """Report the outcome of applying a version (``version``: what is in place now)."""
        if self._metrics is not None:
            name = "aiocoord_config_applied_total" if ok else "aiocoord_config_apply_failures_total"
            self._metrics.inc(name)
        await self._send(version, ok, error)

    async def _send(self, version: str | None, ok: bool, error: str | None) -> None:
        self._last = (version, ok, error)
        try:
            await self._board.report(self.host, version, ok=ok, error=error)
        except aiocoord.CoordError as exc:
            logging.getLogger("aiocoord.status").warning(
                "could not report status: %s (again after reconnecting)", exc
            )

    async def keep(self) -> None:
        async with self._client.session_events() as events:
            async for event in events:
                if event.state is aiocoord.SessionState.CONNECTED and self._last is not None:
                    await self._send(*self._last)
