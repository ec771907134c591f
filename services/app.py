"""``aiocoord app``: apply every newer config version to a file, safely.

For each version the watch yields (newest first seen, never an older one):

1. the bytes go to a temporary file beside ``--out`` (written, fsynced), with the mode and owner
   of the file it replaces (or ``--mode`` / ``--owner``);
2. ``--check-cmd`` runs before the new file replaces the old one: with ``{file}`` in the command
   it checks the temporary file; without it (e.g. ``nginx -t``, which reads the file in place)
   the new file is renamed into place first and the previous one is restored if the check fails;
3. the rename is atomic (and the directory fsynced), then ``--reload-cmd`` runs; if the reload
   fails the previous file is restored and reloaded again;
4. the outcome goes to ``<path>-status/<host-id>`` (ephemeral JSON: version, ok, error,
   applied_at), re-written after a lost session.

A broken config is never left in place over a working one: the previous file goes back on every
way out of an apply, SIGTERM during a command included. ``.<name>.aiocoord`` beside the file
records the version it holds verified (checked and reloaded), and during an apply
``.<name>.aiocoord.previous`` keeps a copy of the bytes in place, verified or not (``.absent``:
there were none): after a crash (kill -9) they go back in place at start, and bytes that match
no record are checked again, never reported ok as "already held". The commands get
``AIOCOORD_CONFIG_FILE``, ``AIOCOORD_CONFIG_NEW`` (the temporary file) and
``AIOCOORD_CONFIG_VERSION`` in their environment and run through ``/bin/sh -c`` (``{file}``: the
temporary file's path, quoted for the shell).
"""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

import anyio

import aiocoord

from .applier import ApplyFailed, Commands, FileApplier, parse_ownership
from .common import (
    StatusReporter,
    UsageError,
    add_id_option,
    add_path_option,
    add_session_options,
    description,
    run_service,
    session,
)
from .metrics import serving

log = logging.getLogger("aiocoord.app")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "app",
        help="apply each new config version to a file (check, atomic replace, reload)",
        description=description(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_session_options(p)
    add_path_option(p, "the config history path, e.g. /Applications/NginxConf")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the file to write")
    p.add_argument(
        "--check-cmd", default=None, metavar="CMD",
        help="checks a new version before it counts as applied, e.g. 'nginx -t' ({file}: the "
        "new file, checked before it replaces the old one)",
    )  # fmt: skip
    p.add_argument(
        "--reload-cmd", default=None, metavar="CMD",
        help="makes the program read the new file, e.g. 'nginx -s reload'",
    )  # fmt: skip
    add_id_option(p, "this host's name in the status node (default: the hostname)")
    p.add_argument(
        "--cmd-timeout", type=float, default=60.0, metavar="SECONDS",
        help="a check or reload command running longer fails the version (default 60)",
    )  # fmt: skip
    p.add_argument(
        "--mode",
        default=None,
        metavar="OCTAL",
        help="the file's mode, e.g. 0640 (default: the replaced file's; a new file 0666 - umask)",
    )
    p.add_argument(
        "--owner",
        default=None,
        metavar="USER[:GROUP]",
        help="the file's owner (default: the replaced file's, kept where allowed)",
    )
    p.set_defaults(func=main)


async def _run(args: argparse.Namespace) -> None:
    host_id = args.id or socket.gethostname()
    commands = Commands(args.check_cmd, args.reload_cmd, args.cmd_timeout)
    out: Path = args.out
    applier = FileApplier(out, commands, args.ownership)
    await anyio.to_thread.run_sync(applier.recover)
    async with (
        session(args) as zk,
        serving(args, "app", zk) as metrics,
    ):
        store = aiocoord.ConfigStore(zk, args.path)
        status = StatusReporter(zk, store.status, host_id, metrics)
        # the version the file holds, as far as we applied (and verified) it
        running = applier.verified.version if applier.verified else None

        async with anyio.create_task_group() as tg, store.watch() as feed:
            tg.start_soon(status.keep)
            log.info("%s: applying %s to %s", host_id, args.path, out)
            async for version in feed:
                try:
                    changed = await applier.apply(version)
                except (ApplyFailed, OSError) as exc:
                    log.error("%s NOT applied, %s stays: %s", version.name, running, exc)
                    await status.report(running, False, f"{version.name}: {exc}")
                    continue
                running = version.name
                if changed:
                    log.info("applied %s to %s", version.name, out)
                else:
                    log.info("%s already holds %s", out, version.name)
                await status.report(running, True)


def main(args: argparse.Namespace) -> int:
    if not args.out.parent.is_dir():
        raise UsageError(f"the directory of --out does not exist: {args.out.parent}")
    try:
        args.ownership = parse_ownership(args.mode, args.owner)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return run_service(log, _run, args)
