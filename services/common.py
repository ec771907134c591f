"""What every command shares: the parser and its one-line errors, the session options (--zk,
--namespace, --session-timeout, --connect-timeout, --zk-tls-*, --zk-sasl-*), the option
vocabulary (--path, --id, --json, hidden old spellings), --log-level and --log-format, and
running a service."""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

import aiocoord
from aiocoord.transport import codec
from aiocoord.transport.hosts import parse_hosts

from .metrics import Metrics

if TYPE_CHECKING:
    from prometheus_client import Counter

DEFAULT_ZK = "127.0.0.1:2181"

log = logging.getLogger("aiocoord.session")


#: how long a one-shot command waits for its first connection by default
ONE_SHOT_CONNECT_TIMEOUT = 5.0

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommandError(Exception):
    """Ends a command with one line on stderr, ``aiocoord <command>: error: <message>``, and
    exit status ``status`` (1; 2 for a usage error)."""

    status = 1

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None):
        super().__init__(message)
        self.hint = hint
        if status is not None:
            self.status = status


class UsageError(CommandError):
    """A bad argument found after parsing (an unreadable @FILE, options that exclude each
    other): exit status 2, like argparse's own."""

    status = 2


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (argparse prints the usage, which
    runs to a dozen lines, before the message), and which checks the options that are required
    under any of their spellings (``add_option(..., required=True)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (dest, option name) of the options required under any spelling
        self.required_options: list[tuple[str, str]] = []
        #: where what follows ``--`` goes (a command to run), if this parser takes one: split off
        #: before parsing, so options and positionals may come before it in any order
        self.command_dest: str | None = None
        #: (with no COMMAND, with a word that is not a COMMAND): the subcommands they mean, for
        #: a parser whose old spellings are ``cmd [options]`` and ``cmd ARG...``
        self.default_commands: tuple[str, str] | None = None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        command: list[str] = []
        if self.command_dest is not None and args is not None and "--" in args:
            at = list(args).index("--")
            args, command = list(args)[:at], list(args)[at + 1 :]
        if self.default_commands is not None and args is not None:
            args = self._command_first(list(args), *self.default_commands)
        parsed, extras = super().parse_known_args(args, namespace)
        if self.command_dest is not None:
            setattr(parsed, self.command_dest, command)
        missing = [name for dest, name in self.required_options if getattr(parsed, dest) is None]
        if missing:
            self.error("the following arguments are required: " + ", ".join(missing))
        return parsed, extras

    def _command_first(self, args: list[str], bare: str, other: str) -> list[str]:
        """``args`` with the COMMAND word first, so that its parser parses every option (a
        subcommand's defaults would override what this parser parsed): ``bare`` when there is
        no word, ``other`` before them all when the first word is not a COMMAND."""
        if "_ARGCOMPLETE" in os.environ:  # completing: leave the words where the user put them
            return args
        commands = next(a for a in self._actions if isinstance(a, argparse._SubParsersAction))
        with_value = {o for a in commands.choices[bare]._actions if a.nargs != 0
                      for o in a.option_strings}  # fmt: skip
        skip = False
        for at, arg in enumerate(args):
            if skip or arg.startswith("-"):
                skip = not skip and arg in with_value
                continue
            if arg in commands.choices:
                return [arg, *args[:at], *args[at + 1 :]]
            return [other, *args]
        return args if {"-h", "--help"} & set(args) else [bare, *args]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_option(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    aliases: Sequence[str] = (),
    required: bool = False,
    **kwargs: Any,
) -> argparse.Action:
    """``parser.add_argument(name, **kwargs)`` plus the old spellings ``aliases``, accepted but
    left out of the help (scripts use them). ``required``: given under one of the spellings."""
    action = parser.add_argument(name, **kwargs)
    hidden = {k: v for k, v in kwargs.items() if k in ("type", "action", "metavar")}
    for alias in aliases:
        parser.add_argument(alias, dest=action.dest, help=argparse.SUPPRESS, **hidden)
    if required:
        assert isinstance(parser, Parser), "required options need a services.common.Parser"
        parser.required_options.append((action.dest, name))
    return action


def description(doc: str | None, *, lead: bool = False) -> str | None:
    """A module docstring as command help: what follows its first paragraph (``lead``: that
    paragraph alone), without the reStructuredText literal quotes."""
    if not doc:
        return None
    return doc.split("\n\n", 1)[0 if lead else -1].replace("``", "")


def arg_type(convert: Callable[[str], object]) -> Callable[[str], Any]:
    """An argparse ``type`` whose error message is ``convert``'s own ValueError."""

    def checked(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    checked.__name__ = convert.__name__
    return checked


def _hosts(text: str) -> str:
    parse_hosts(text)
    return text


#: argparse types that validate before a session opens
zk_hosts = arg_type(_hosts)
znode_path = arg_type(aiocoord.validate_path)
json_value = arg_type(lambda text: codec.loads(text, what="the value"))


def add_path_option(
    parser: argparse.ArgumentParser,
    help: str,
    *,
    aliases: Sequence[str] = (),
    required: bool = True,
    default: str | None = None,
) -> None:
    """``--path``: the ZooKeeper path a command works under (one spelling in every command)."""
    add_option(parser, "--path", aliases=aliases, required=required, default=default,
               type=znode_path, metavar="PATH", help=help)  # fmt: skip


def add_id_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--id``: who this process is (a host, a worker, a candidate); ``--identity`` is the old
    spelling of some commands."""
    add_option(parser, "--id", aliases=["--identity"], default=None, metavar="ID", help=help)


def add_json_option(parser: argparse.ArgumentParser, what: str = "print JSON") -> None:
    parser.add_argument("--json", action="store_true", help=what)


#: the TLS and SASL session options: (option, metavar, environment variable, help)
_SECURITY_OPTIONS = (
    ("--zk-tls-ca", "FILE", "AIOCOORD_ZK_TLS_CA", "connect with TLS, the servers' certificates "
     "checked against the CAs of this PEM file and their names against --zk's hosts"),
    ("--zk-tls-cert", "FILE", "AIOCOORD_ZK_TLS_CERT",
     "TLS client certificate (PEM), for servers that require one"),
    ("--zk-tls-key", "FILE", "AIOCOORD_ZK_TLS_KEY",
     "the client certificate's private key (PEM), when not in --zk-tls-cert"),
    ("--zk-sasl-user", "NAME", "AIOCOORD_ZK_SASL_USER",
     "authenticate with SASL DIGEST-MD5 as NAME"),
)  # fmt: skip


def add_session_options(parser: argparse.ArgumentParser, *, one_shot: bool = False) -> None:
    """The session options; ``one_shot`` commands fail fast when ZooKeeper cannot be reached
    (a service waits up to its session timeout) and log only warnings and errors by default."""
    if one_shot:
        parser.set_defaults(default_log_level="WARNING")
    group = parser.add_argument_group("ZooKeeper session")
    group.add_argument(
        "--zk",
        metavar="HOSTS",
        type=zk_hosts,
        default=os.environ.get("AIOCOORD_ZK", DEFAULT_ZK),
        help="ZooKeeper hosts, host:port[,host:port...][/chroot] "
        f"(default: $AIOCOORD_ZK, else {DEFAULT_ZK})",
    )
    group.add_argument(
        "--namespace",
        metavar="PATH",
        type=znode_path,
        default=None,
        help="chroot: every path of the command is under PATH",
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
    for option, metavar, variable, what in _SECURITY_OPTIONS:
        group.add_argument(
            option,
            metavar=metavar,
            default=os.environ.get(variable) or None,
            help=f"{what} (default: ${variable})",
        )
    group.add_argument(
        "--zk-sasl-password-file",
        metavar="FILE",
        default=None,
        help="the SASL password: the first line of FILE (default: $AIOCOORD_ZK_SASL_PASSWORD; "
        "never on the command line)",
    )
    # refused, not taken as an abbreviation of --zk-sasl-password-file (whose error would echo it)
    group.add_argument("--zk-sasl-password", action=_NoPasswordHere, help=argparse.SUPPRESS)


class _NoPasswordHere(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parser.error(
            "a password is never given on the command line (other users see it): "
            "--zk-sasl-password-file FILE or $AIOCOORD_ZK_SASL_PASSWORD"
        )


def session_security(
    args: argparse.Namespace,
) -> tuple[ssl.SSLContext | None, aiocoord.SaslOptions | None]:
    """The TLS context and SASL options of the session options, checked before any session
    opens: a file that does not load or a user without a password is a ``UsageError``."""
    ca, cert, key = args.zk_tls_ca, args.zk_tls_cert, args.zk_tls_key
    context = None
    if ca or cert or key:
        try:
            context = aiocoord.tls_context(ca, cert=cert, key=key)
        except ValueError as exc:
            raise UsageError(f"--zk-tls-*: {exc}") from None
    user = args.zk_sasl_user
    password = _sasl_password(args.zk_sasl_password_file)
    if password is not None and not user:
        raise UsageError("a SASL password needs --zk-sasl-user (or $AIOCOORD_ZK_SASL_USER)")
    if not user:
        return context, None
    if password is None:
        raise UsageError(
            "--zk-sasl-user needs a password: --zk-sasl-password-file FILE or "
            "$AIOCOORD_ZK_SASL_PASSWORD"
        )
    return context, aiocoord.SaslOptions(user, password)


def _sasl_password(path: str | None) -> str | None:
    """The password of --zk-sasl-password-file (its first line), else $AIOCOORD_ZK_SASL_PASSWORD."""
    if path is None:
        return os.environ.get("AIOCOORD_ZK_SASL_PASSWORD") or None
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"--zk-sasl-password-file: cannot read {path}: {reason}") from None
    if not password:
        raise UsageError(f"--zk-sasl-password-file: {path} starts with an empty line")
    return password


#: a service's pause between two rounds of its hosts while it waits for ZooKeeper at start
WAIT_RETRY = 1.0


@contextlib.asynccontextmanager
async def session(args: argparse.Namespace) -> AsyncIterator[aiocoord.Client]:
    """The client for the options of ``add_session_options`` (``async with session(args)``).

    A one-shot command, or any command given ``--connect-timeout``, gives up with
    ``ConnectError`` when no host answers in time. A service (no ``--connect-timeout``) waits
    for ZooKeeper instead: each round of its hosts that fails within the session timeout is
    logged as a warning naming the hosts and the errors, and tried again until SIGTERM, as a
    supervisor would restart it, so a service started while ZooKeeper is unreachable (a
    rebooting host, a member failing over, a cut link) comes up once it is reachable."""
    context, sasl = getattr(args, "zk_security", None) or session_security(args)
    while True:
        client = aiocoord.Client(
            args.zk,
            namespace=args.namespace,
            session_timeout=args.session_timeout,
            connect_timeout=args.connect_timeout,
            ssl=context,
            sasl=sasl,
        )
        try:
            await client.__aenter__()
            break
        except aiocoord.ConnectError as exc:
            if args.connect_timeout is not None:
                raise
            log.warning("%s: waiting for ZooKeeper, trying again", exc)
        await anyio.sleep(WAIT_RETRY)
    try:
        yield client
    finally:
        await client.aclose()


def write_deadline(args: argparse.Namespace) -> float:
    """How long a one-shot command's write (publish, rollback, submit) waits through a
    disconnection before it gives up with its outcome unknown: twice the session timeout."""
    return 2 * float(args.session_timeout)


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``, on every parser of the tree: before or after the
    subcommand (the last one given wins). Unset, the command's own default applies."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        metavar="LEVEL",
        help="debug, info, warning or error, in any case (default: $AIOCOORD_LOG_LEVEL, else "
        "warning for one-shot commands and info for services); debug also shows the traceback "
        "of an error",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="text: one line per record with an ISO 8601 timestamp; json: one JSON object per "
        "record, for log collectors (default text)",
    )


def log_level(args: argparse.Namespace) -> str:
    """The level the options, $AIOCOORD_LOG_LEVEL or the command's default give."""
    given = getattr(args, "log_level", None) or os.environ.get("AIOCOORD_LOG_LEVEL", "").upper()
    if given in LOG_LEVELS:
        return given
    return str(getattr(args, "default_log_level", "INFO"))


def _timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 with the local zone, to the millisecond (2024-05-01T20:03:03.123+02:00)."""
    when = datetime.datetime.fromtimestamp(record.created).astimezone()
    return when.isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and exception when any)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return codec.dumps(line).decode()


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
    # httpx logs each health check request at INFO: one line every --interval is noise
    logging.getLogger("httpx").setLevel(max(logging.WARNING, getattr(logging, level)))


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


def add_pem_option(
    group: argparse._ActionsContainer, name: str, help: str, *, env: str | None = None
) -> None:
    """An option naming a PEM file (a certificate, a key, a CA), from ``$env`` by default."""
    default = os.environ.get(env) if env else None
    group.add_argument(name, default=default, metavar="FILE",
                       help=help + (f" (default: ${env})" if env else ""))  # fmt: skip


def tls_context(
    purpose: ssl.Purpose,
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    what: str = "--tls",
) -> ssl.SSLContext:
    """A TLS context from PEM files: ``purpose`` CLIENT_AUTH for a server (``cert``/``key`` its
    own, ``ca`` the CA its clients' certificates must chain to: given, they are required),
    SERVER_AUTH for a client (``ca`` instead of the system's, ``cert``/``key`` for mutual TLS).
    An unreadable or unmatched file is a ``UsageError`` naming the ``what`` options."""
    context = ssl.create_default_context(purpose)
    try:
        if ca is not None:
            context.load_verify_locations(cafile=ca)
            if purpose is ssl.Purpose.CLIENT_AUTH:
                context.verify_mode = ssl.CERT_REQUIRED
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (ca, cert, key) if f)
        raise UsageError(f"{what}: cannot load {files}: {exc.strerror or exc}") from exc
    return context


def print_json(value: object) -> None:
    """One JSON line on stdout, flushed (for scripts reading as it comes)."""
    sys.stdout.write(codec.dumps(value).decode() + "\n")
    sys.stdout.flush()


def data_fields(data: bytes) -> dict[str, str]:
    """Bytes for a JSON object: ``{"data": TEXT, "encoding": "utf-8"}``, or base64 when the bytes
    are not UTF-8."""
    try:
        return {"data": data.decode(), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode(), "encoding": "base64"}


def read_data_argument(value: str) -> bytes:
    """A DATA argument: ``-`` reads stdin, ``@FILE`` reads a file, anything else is the text.
    An unreadable file is a ``UsageError`` (read before any session opens)."""
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        try:
            with open(value[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"cannot read {value}: {exc.strerror or exc}") from exc
    return value.encode()


def run_service(log: logging.Logger, main: Callable[..., Awaitable[object]], *args: object) -> int:
    """Run a service's ``main(*args)`` until it ends or SIGTERM/SIGINT; 0. Its errors go to the
    command line's one-line report (``cli.main``)."""
    aiocoord.run(main, *args)
    log.info("stopped")
    return 0


class StatusReporter:
    """Reports this host's status on a ``StatusBoard``: run ``keep()`` in a task, which writes the
    last status again on every new session (the ephemeral status node went with the lost one),
    and once the session is back when its last write failed (in a blip)."""

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
        #: the last status written, and the session it was written on
        self._written: tuple[tuple[str | None, bool, str | None], int] | None = None
        self._writing = anyio.Lock()
        self._outcomes: tuple[Counter, Counter] | None = None
        if metrics is not None:
            self._outcomes = (
                metrics.counter("aiocoord_config_applied_total", "versions applied"),
                metrics.counter("aiocoord_config_apply_failures_total",
                                "versions that failed to apply (the previous one stays)"),
            )  # fmt: skip
            metrics.readiness(self.readiness)

    async def report(self, version: str | None, ok: bool, error: str | None = None) -> None:
        """Report the outcome of applying a version (``version``: what is in place now)."""
        if self._outcomes is not None:
            self._outcomes[0 if ok else 1].inc()
        self._last = (version, ok, error)
        await self._write()

    def readiness(self) -> tuple[bool, str]:
        """Ready once a version is in place and verified (a failed newer one leaves the previous
        one serving: still ready); not before the first one applied."""
        if self._last is None or self._last[0] is None:
            return False, "no version applied yet"
        version, ok, error = self._last
        return True, f"{version} in place" + ("" if ok else f" (a newer one failed: {error})")

    async def _write(self) -> None:
        """Write the last status unless this session has it already: one write at a time, so
        the last one written is the last reported."""
        async with self._writing:
            last, session = self._last, self._client.session_id
            if last is None or self._written == (last, session):
                return
            try:
                await self._board.report(self.host, last[0], ok=last[1], error=last[2])
            except aiocoord.CoordError as exc:
                # applied or not: what the node holds is not known any more
                self._written = None
                logging.getLogger("aiocoord.status").warning(
                    "could not report status: %s (again once the session is back)", exc
                )
                return
            self._written = (last, session)

    async def keep(self) -> None:
        async with self._client.session_events() as events:
            async for event in events:
                # CONNECTED: a new session (the status node went with the lost one);
                # RECONNECTED: the same one, a write may have failed in the blip
                if event.state in (aiocoord.SessionState.CONNECTED,
                                   aiocoord.SessionState.RECONNECTED):  # fmt: skip
                    await self._write()
