"""``aiocoord trigger`` and ``aiocoord config``: send a trigger command; use the config store."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import anyio

import aiocoord

from .common import (
    add_session_options,
    parse_address,
    print_json,
    read_data_argument,
    session,
    write_deadline,
)

log = logging.getLogger("aiocoord.config")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser(
        "trigger",
        help="send one trigger command to the config agent",
        description="Send CMD DATA to the agent's trigger port and print the version it made. "
        "Exits 0 on OK, 1 on a refused request (the error code and message are printed), "
        "2 when the agent cannot be reached. DATA: text, '-' for stdin, '@FILE' for a file.",
    )
    t.add_argument("--to", default="127.0.0.1:8877", metavar="HOST:PORT", help="(127.0.0.1:8877)")
    t.add_argument(
        "--token",
        default=os.environ.get("AIOCOORD_TRIGGER_TOKEN"),
        help="(default: $AIOCOORD_TRIGGER_TOKEN)",
    )
    t.add_argument(
        "--key", default=None, help="idempotency key: a retried request makes one version"
    )
    t.add_argument(
        "--legacy", action="store_true", help="send the old 'CMD|DATA' line instead of JSON"
    )
    t.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="(10)")
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
    for name, text in (
        ("publish", "publish DATA as a new version"),
        ("current", "print the newest version's data"),
        ("history", "list the kept versions"),
        ("rollback", "republish an old version as the newest"),
        ("status", "show which version each host runs"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        add_session_options(a, one_shot=True)
        a.add_argument("--path", required=True, help="config history path")
        a.add_argument("--json", action="store_true", help="print JSON")
        if name == "publish":
            a.add_argument("data", metavar="DATA", help="config text, '-' (stdin) or '@FILE'")
            a.add_argument("--key", default=None, help="idempotency key")
            a.add_argument(
                "--allow-empty",
                action="store_true",
                help="publish empty (or whitespace-only) DATA; refused by default, as an empty "
                "config usually takes a site down",
            )
        if name == "rollback":
            a.add_argument("version", metavar="VERSION", help="conf-<10 digits> or its number")
        a.set_defaults(func=config_main)


def trigger_main(args: argparse.Namespace) -> int:
    try:
        host, port = parse_address(args.to)
        data = read_data_argument(args.data)
    except (ValueError, OSError) as exc:
        print(f"aiocoord trigger: {exc}", file=sys.stderr)
        return 2

    async def send() -> str:
        with anyio.fail_after(args.timeout):
            if args.legacy:
                return await aiocoord.send_legacy(host, port, args.cmd.encode() + b"|" + data)
            async with aiocoord.TriggerClient(host, port, token=args.token) as client:
                return await client.send(args.cmd, data, key=args.key)

    try:
        print(anyio.run(send))
    except aiocoord.TriggerError as exc:
        print(f"ERR {exc.code} {exc.message}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, UnicodeDecodeError) as exc:
        print(f"aiocoord trigger: cannot reach {args.to}: {exc!r}", file=sys.stderr)
        return 2
    return 0


async def _config(args: argparse.Namespace) -> int:
    async with session(args) as zk:
        store = aiocoord.ConfigStore(zk, args.path)
        line: dict[str, object]
        if args.action in ("publish", "rollback"):
            data = read_data_argument(args.data) if args.action == "publish" else b""
            if args.action == "publish" and not data.strip() and not args.allow_empty:
                print("aiocoord config publish: error: DATA is empty (--allow-empty to publish "
                      "it anyway)", file=sys.stderr)  # fmt: skip
                return 2
            try:
                with anyio.fail_after(write_deadline(args)):
                    if args.action == "publish":
                        name = await store.publish(data, key=args.key)
                    else:
                        version = int(args.version) if args.version.isdigit() else args.version
                        name = await store.rollback(version)
            except TimeoutError:
                again = "publish again with the same --key" if args.key else "check `history`"
                print(f"aiocoord config {args.action}: error: ZooKeeper did not answer within "
                      f"{write_deadline(args):g}s: the {args.action} may or may not have been "
                      f"applied ({again})", file=sys.stderr)  # fmt: skip
                return 1
            print(name)
        elif args.action == "current":
            current = await store.current()
            if current is None:
                print(f"nothing published at {args.path}", file=sys.stderr)
                return 1
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
    try:
        return aiocoord.run(_config, args) or 0
    except (ValueError, OSError, aiocoord.CoordError) as exc:
        print(f"aiocoord config {args.action}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
