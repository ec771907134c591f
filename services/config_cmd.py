"""``aiocoord trigger`` and ``aiocoord config``: send a trigger command; use the config store."""

from __future__ import annotations

import argparse
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
    add_json_option(t, 'print {"version": VERSION}')
    rollout = t.add_argument_group(
        "rollout", "with --wait-applied (and --path, the agent's --path): wait for the hosts' "
        "status under <path>-status in ZooKeeper"
    )  # fmt: skip
    add_wait_options(rollout)
    add_path_option(t, "the agent's config history path (with --wait-applied)", required=False)
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
        if name in ("publish", "rollback"):
            add_wait_options(a)
        if name == "rollback":
            a.add_argument(
                "version", metavar="VERSION", type=_version,
                help="the version to republish: conf-<10 digits> or its number",
            )  # fmt: skip
        a.set_defaults(func=config_main)


def add_wait_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--wait-applied", type=int, default=None, metavar="N",
        help="then wait until N hosts report the new version (or a newer one) applied; exit 1 "
        "naming the hosts behind when they have not within --wait-timeout",
    )  # fmt: skip
    parser.add_argument(
        "--wait-timeout", type=float, default=60.0, metavar="SECONDS",
        help="how long --wait-applied waits (default 60)",
    )  # fmt: skip


def _check_wait_options(args: argparse.Namespace) -> None:
    if args.wait_applied is not None and args.wait_applied < 1:
        raise UsageError("--wait-applied: N must be at least 1")
    if args.wait_timeout <= 0:
        raise UsageError("--wait-timeout: SECONDS must be positive")


async def _wait_applied(
    args: argparse.Namespace, board: aiocoord.StatusBoard, version: str
) -> None:
    """Wait for ``--wait-applied`` hosts to report ``version`` applied (a line on stderr says
    so), or fail naming the hosts behind."""
    wanted = args.wait_applied
    with anyio.move_on_after(args.wait_timeout):
        done = await board.wait_applied(version, wanted)
        print(f"{version} applied on {len(done)} hosts: "
              f"{', '.join(s.host for s in done)}", file=sys.stderr)  # fmt: skip
        return
    statuses = await board.read()
    done = aiocoord.StatusBoard.applied(statuses, version)
    lagging = [
        f"{s.host} ({s.version or 'nothing'}{'' if s.ok else ': ' + (s.error or 'failed')})"
        for s in aiocoord.StatusBoard.behind(statuses, version)
    ]
    raise CommandError(
        f"{version} applied on {len(done)} of {wanted} hosts within {args.wait_timeout:g}s; "
        f"behind: {', '.join(lagging) or 'none'}"
        + ("" if len(statuses) >= wanted else f"; only {len(statuses)} hosts report"),
        hint=f"`aiocoord config status --path {board.path.removesuffix('-status')}` shows them",
    )


def trigger_main(args: argparse.Namespace) -> int:
    try:
        host, port = parse_address(args.to)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from exc
    _check_wait_options(args)
    if args.wait_applied is not None and args.path is None:
        raise UsageError("--wait-applied needs --path (the agent's config history path)")
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
    if args.json:
        print_json({"version": version})
    else:
        print(version)
    if args.wait_applied is not None:
        sys.stdout.flush()  # the version first, whatever the wait brings

        async def wait() -> None:
            async with session(args) as zk:
                await _wait_applied(args, aiocoord.ConfigStore(zk, args.path).status, version)

        anyio.run(wait)
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
            if args.json:
                print_json({"version": name})
            else:
                print(name)
            if args.wait_applied is not None:
                sys.stdout.flush()
                await _wait_applied(args, store.status, name)
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
    if args.action in ("publish", "rollback"):
        _check_wait_options(args)
    if args.action == "publish":
        data = read_data_argument(args.data)
        if not data.strip() and not args.allow_empty:
            raise UsageError("DATA is empty", hint="--allow-empty publishes it anyway")
    return aiocoord.run(_config, args, data) or 0
