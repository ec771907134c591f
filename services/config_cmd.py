"""``aiocoord trigger`` and ``aiocoord config``: send a trigger command; use the config store."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import ssl
import sys
import time

import anyio

import aiocoord

from .common import (
    CommandError,
    UsageError,
    add_json_option,
    add_path_option,
    add_pem_option,
    add_session_options,
    parse_address,
    print_json,
    read_data_argument,
    session,
    tls_context,
    write_deadline,
)

log = logging.getLogger("aiocoord.config")


def _version(text: str) -> int | str:
    """A VERSION argument: ``conf-<10 digits>`` or its number."""
    if text.isdigit():
        return int(text)
    if re.fullmatch(r"conf-\d{10}", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a version: conf-<10 digits> or its number")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser(
        "trigger",
        help="send one trigger command to the config agent",
        description="Send CMD DATA to the agent's trigger port and print the version it made. "
        "Exits 0 on OK, 1 on a refused request (the reply, ERR CODE MESSAGE, is printed on "
        "stderr), 2 when the agent cannot be reached. DATA: text, '-' for stdin, '@FILE' for a "
        "file.",
    )
    t.set_defaults(default_log_level="WARNING")
    t.add_argument(
        "--to", default="127.0.0.1:8877", metavar="HOST:PORT",
        help="the agent's trigger address (default 127.0.0.1:8877)",
    )  # fmt: skip
    t.add_argument(
        "--token",
        default=os.environ.get("AIOCOORD_TRIGGER_TOKEN"),
        metavar="TOKEN",
        help="the agent's shared secret (default: $AIOCOORD_TRIGGER_TOKEN)",
    )
    t.add_argument(
        "--key", default=None, metavar="KEY",
        help="idempotency key: a retried request with the same KEY makes one version",
    )  # fmt: skip
    tls = t.add_argument_group(
        "TLS", "speak TLS to an agent that serves it (--tls-cert on the agent); the files are PEM"
    )
    add_pem_option(tls, "--tls-ca", "trust the agent's certificate when this CA signed it, its "
                   "name checked against --to's host", env="AIOCOORD_TRIGGER_TLS_CA")  # fmt: skip
    add_pem_option(tls, "--tls-cert", "a client certificate chain, for an agent that requires "
                   "one (--tls-client-ca)", env="AIOCOORD_TRIGGER_TLS_CERT")  # fmt: skip
    add_pem_option(tls, "--tls-key", "its private key (omitted: in --tls-cert)",
                   env="AIOCOORD_TRIGGER_TLS_KEY")  # fmt: skip
    t.add_argument(
        "--legacy", action="store_true", help="send the old 'CMD|DATA' line instead of JSON"
    )
    t.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS",
        help="give up when the agent has not answered within SECONDS (default 10)",
    )  # fmt: skip
    add_json_option(t, 'print {"version": VERSION} (and "applied": the hosts, with '
                    "--wait-applied)")  # fmt: skip
    waiting = t.add_argument_group(
        "waiting for the rollout", "with --wait-applied: the ZooKeeper session and --path"
    )
    _add_wait_options(waiting)
    add_path_option(t, "the config history path the agent publishes to (with --wait-applied)",
                    required=False)  # fmt: skip
    add_session_options(t, one_shot=True)
    t.add_argument("cmd", metavar="CMD", help="command, e.g. ADD")
    t.add_argument("data", metavar="DATA", help="config text, '-' (stdin) or '@FILE'")
    t.set_defaults(func=trigger_main)

    c = sub.add_parser(
        "config",
        help="the config store: publish, current, history, rollback, status",
        description="Read and write the versioned config history at --path directly "
        "(without the agent).",
    )
    actions = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text, json_text in (
        ("publish", "publish DATA as a new version", 'print {"version": VERSION}'),
        ("current", "print the newest version's data", 'print {"version", "data"}'),
        ("history", "list the kept versions", 'print one {"version", "zxid", "bytes"} a line'),
        ("rollback", "republish an old version as the newest", 'print {"version": VERSION}'),
        ("status", "show which version each host runs",
         'print one {"host", "version", "ok", "error", "applied_at", "current"} a line'),
    ):  # fmt: skip
        a = actions.add_parser(name, help=text, description=text)
        add_session_options(a, one_shot=True)
        add_path_option(a, "the config history path, e.g. /Applications/NginxConf")
        add_json_option(a, json_text)
        if name == "publish":
            a.add_argument("data", metavar="DATA", help="config text, '-' (stdin) or '@FILE'")
            a.add_argument(
                "--key", default=None, metavar="KEY",
                help="idempotency key: publishing again with the same KEY makes one version",
            )  # fmt: skip
            a.add_argument(
                "--allow-empty",
                action="store_true",
                help="publish empty (or whitespace-only) DATA; refused by default, as an empty "
                "config usually takes a site down",
            )
        if name == "rollback":
            a.add_argument(
                "version", metavar="VERSION", type=_version,
                help="the version to republish: conf-<10 digits> or its number",
            )  # fmt: skip
        if name in ("publish", "rollback"):
            _add_wait_options(a)
        a.set_defaults(func=config_main)


def _add_wait_options(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--wait-applied", type=_positive_count, default=None, metavar="N",
        help="then wait until N hosts report the new version (or a newer one) applied at "
        "<path>-status; exit 1 naming the hosts behind after --wait-timeout",
    )  # fmt: skip
    parser.add_argument(
        "--wait-timeout", type=float, default=60.0, metavar="SECONDS",
        help="how long --wait-applied waits (default 60)",
    )  # fmt: skip


def _positive_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hosts (1 or more)")
    return int(text)


async def wait_applied(
    zk: aiocoord.Client, path: str, version: str, hosts: int
) -> list[aiocoord.HostStatus]:
    """Wait until ``hosts`` hosts report ``version`` (or a newer one) applied at
    ``<path>-status``; their statuses. Bound it with ``anyio.fail_after``."""
    board = aiocoord.StatusBoard(zk, f"{path.rstrip('/')}-status")
    changed = [anyio.Event()]

    def on_change(_event: aiocoord.WatchEvent) -> None:
        changed[0].set()

    # one watch for every status node: created, rewritten, deleted
    await zk.add_watch(board.path, on_change, mode=aiocoord.WatchMode.PERSISTENT_RECURSIVE)
    try:
        while True:
            changed[0] = anyio.Event()
            applied = [s for s in await board.read() if _applied(s, version)]
            if len(applied) >= hosts:
                return applied
            await changed[0].wait()
    finally:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(2),
            contextlib.suppress(aiocoord.CoordError),
        ):
            await zk.remove_watch(board.path, on_change)


def _applied(status: aiocoord.HostStatus, version: str) -> bool:
    # conf-<10 digits>: the larger name is the newer version. (A host whose status says it runs
    # this one but failed a newer one has applied this one.)
    return status.version is not None and status.version >= version


async def _wait_applied_or_fail(
    zk: aiocoord.Client, args: argparse.Namespace, version: str
) -> list[str]:
    """The hosts that applied ``version`` (--wait-applied of them); ``CommandError`` naming the
    hosts behind after --wait-timeout."""
    try:
        with anyio.fail_after(args.wait_timeout):
            applied = await wait_applied(zk, args.path, version, args.wait_applied)
    except TimeoutError:
        statuses = await aiocoord.StatusBoard(zk, f"{args.path.rstrip('/')}-status").read()
        done = [s.host for s in statuses if _applied(s, version)]
        behind = [
            f"{s.host} (at {s.version}" + (f", failed: {s.error}" if s.error else "") + ")"
            for s in statuses
            if not _applied(s, version)
        ]
        raise CommandError(
            f"{version} published, but {len(done)} of {args.wait_applied} hosts applied it within "
            f"{args.wait_timeout:g}s; behind: {'; '.join(behind) or 'no other host reports'}"
        ) from None
    return [s.host for s in applied]


def trigger_main(args: argparse.Namespace) -> int:
    if args.wait_applied is not None and args.path is None:
        raise UsageError("--wait-applied needs --path (where the hosts report)")
    try:
        host, port = parse_address(args.to)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from exc
    tls = None
    if args.tls_ca or args.tls_cert:
        tls = tls_context(ssl.Purpose.SERVER_AUTH, ca=args.tls_ca, cert=args.tls_cert,
                          key=args.tls_key, what="--tls-ca/--tls-cert/--tls-key")  # fmt: skip
    elif args.tls_key:
        raise UsageError("--tls-key needs --tls-cert")
    data = read_data_argument(args.data)

    async def send() -> str:
        with anyio.fail_after(args.timeout):
            if args.legacy:
                request = args.cmd.encode() + b"|" + data
                return await aiocoord.send_legacy(host, port, request, ssl_context=tls)
            async with aiocoord.TriggerClient(
                host, port, token=args.token, ssl_context=tls
            ) as client:
                return await client.send(args.cmd, data, key=args.key)

    try:
        version = anyio.run(send)
    except aiocoord.TriggerError as exc:
        print(f"ERR {exc.code} {exc.message}", file=sys.stderr)
        return 1
    except ssl.SSLError as exc:
        raise CommandError(
            f"TLS with the agent at {args.to} failed: {exc.reason or exc}",
            hint="--tls-ca names the CA that signed the agent's certificate; an agent with "
            "--tls-client-ca needs --tls-cert/--tls-key",
            status=2,
        ) from exc
    except (OSError, TimeoutError, UnicodeDecodeError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else exc.__class__.__name__
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        raise CommandError(
            f"cannot reach the agent at {args.to}: {reason}",
            hint="is `aiocoord agent` running and leading?",
            status=2,
        ) from exc
    if args.wait_applied is None:
        if args.json:
            print_json({"version": version})
        else:
            print(version)
        return 0
    if not args.json:
        print(version, flush=True)

    async def wait() -> list[str]:
        async with session(args) as zk:
            return await _wait_applied_or_fail(zk, args, version)

    applied = aiocoord.run(wait) or []
    if args.json:
        print_json({"version": version, "applied": applied})
    return 0


async def _config(args: argparse.Namespace, data: bytes) -> int:
    async with session(args) as zk:
        store = aiocoord.ConfigStore(zk, args.path)
        line: dict[str, object]
        if args.action in ("publish", "rollback"):
            try:
                with anyio.fail_after(write_deadline(args)):
                    if args.action == "publish":
                        name = await store.publish(data, key=args.key)
                    else:
                        name = await store.rollback(args.version)
            except TimeoutError:
                again = "publish again with the same --key" if args.key else "check `history`"
                raise CommandError(f"ZooKeeper did not answer within {write_deadline(args):g}s: "
                                   f"the {args.action} may or may not have been applied",
                                   hint=again) from None  # fmt: skip
            except aiocoord.NoNode as exc:
                if args.action == "publish":
                    raise
                raise CommandError(
                    f"no version {args.version} at {args.path}",
                    hint="`aiocoord config history` lists them",
                ) from exc
            if not args.json:
                print(name, flush=True)
            applied = None
            if args.wait_applied is not None:
                applied = await _wait_applied_or_fail(zk, args, name)
            if args.json:
                print_json({"version": name, **({"applied": applied} if applied else {})})
        elif args.action == "current":
            current = await store.current()
            if current is None:
                raise CommandError(f"nothing published at {args.path}")
            if args.json:
                line = {
                    "version": current.name,
                    "data": current.data.decode(errors="replace"),
                }
                print_json(line)
            else:
                sys.stdout.buffer.write(current.data)
        elif args.action == "history":
            for v in await store.history():
                if args.json:
                    line = {
                        "version": v.name,
                        "zxid": v.zxid,
                        "bytes": len(v.data),
                    }
                    print_json(line)
                else:
                    print(f"{v.name}  zxid 0x{v.zxid:x}  {len(v.data)} bytes")
        elif args.action == "status":
            current = await store.current()
            newest = current.name if current else None
            statuses = await store.status.read()
            for s in statuses:
                if args.json:
                    line = {
                        "host": s.host,
                        "version": s.version,
                        "ok": s.ok,
                        "error": s.error,
                        "applied_at": s.applied_at,
                        "current": s.version == newest,
                    }
                    print_json(line)
                else:
                    age = time.time() - s.applied_at
                    mark = "ok " if s.ok else "ERR"
                    lag = "" if s.version == newest else f" (newest is {newest})"
                    error = f"  {s.error}" if s.error else ""
                    print(f"{mark} {s.host:<24} {s.version}{lag}  {age:.0f}s ago{error}")
            if not statuses and not args.json:
                print(f"no host reports under {store.status.path} (newest: {newest})")
    return 0


def config_main(args: argparse.Namespace) -> int:
    data = b""
    if args.action == "publish":
        data = read_data_argument(args.data)
        if not data.strip() and not args.allow_empty:
            raise UsageError("DATA is empty", hint="--allow-empty publishes it anyway")
    return aiocoord.run(_config, args, data) or 0
