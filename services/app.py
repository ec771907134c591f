"""``aiocoord app``: apply every newer config version to a file, safely.

For each version the watch yields (newest first seen, never an older one):

1. the bytes go to a temporary file beside ``--out`` (written, fsynced);
2. ``--check-cmd`` runs before the new file replaces the old one: with ``{file}`` in the command
   it checks the temporary file; without it (e.g. ``nginx -t``, which reads the file in place)
   the new file is renamed into place first and the previous one is restored if the check fails;
3. the rename is atomic (and the directory fsynced), then ``--reload-cmd`` runs; if the reload
   fails the previous file is restored and reloaded again;
4. the outcome goes to ``<path>-status/<host-id>`` (ephemeral JSON: version, ok, error,
   applied_at), re-written after a lost session.

A broken config is never left in place over a working one. The commands get
``AIOCOORD_CONFIG_FILE``, ``AIOCOORD_CONFIG_NEW`` (the temporary file) and
``AIOCOORD_CONFIG_VERSION`` in their environment and run through ``/bin/sh -c``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import anyio

import aiocoord

from .common import StatusReporter, add_session_options, run_service, session
from .metrics import serving

log = logging.getLogger("aiocoord.app")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "app",
        help="apply each new config version to a file (check, atomic replace, reload)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_session_options(p)
    p.add_argument(
        "--path", required=True, help="config history path, e.g. /Applications/NginxConf"
    )
    p.add_argument("--out", required=True, type=Path, help="the file to write")
    p.add_argument("--check-cmd", default=None, metavar="CMD", help="e.g. 'nginx -t'")
    p.add_argument("--reload-cmd", default=None, metavar="CMD", help="e.g. 'nginx -s reload'")
    p.add_argument("--id", default=None, help="host id for the status node (default: hostname)")
    p.add_argument(
        "--cmd-timeout", type=float, default=60.0, metavar="SECONDS", help="per command (60)"
    )
    p.set_defaults(func=main)


@dataclass(frozen=True, slots=True)
class Commands:
    check: str | None
    reload: str | None
    timeout: float


class ApplyFailed(Exception):
    """A version could not be applied; the previous file is in place."""


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _restore(out: Path, previous: bytes | None) -> None:
    if previous is None:
        out.unlink(missing_ok=True)
        return
    tmp = out.with_name(f".{out.name}.restore")
    _write_synced(tmp, previous)
    _replace(tmp, out)


async def _run_cmd(what: str, cmd: str, env: dict[str, str], commands: Commands) -> None:
    timeout = commands.timeout
    try:
        with anyio.fail_after(timeout):
            result = await anyio.run_process(["/bin/sh", "-c", cmd], check=False, env=env)
    except TimeoutError:
        raise ApplyFailed(f"{what} command timed out after {timeout:g}s: {cmd}") from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise ApplyFailed(f"{what} command failed (exit {result.returncode}): {output[-400:]}")


async def apply_version(out: Path, version: aiocoord.ConfigVersion, commands: Commands) -> bool:
    """Make ``out`` hold ``version`` (check, replace, reload); returns False when it already did.
    Raises ``ApplyFailed`` with the previous file in place."""
    previous = await anyio.to_thread.run_sync(_read_if_exists, out)
    if previous == version.data:
        return False
    tmp = out.with_name(f".{out.name}.{version.name.rsplit('/', 1)[-1]}.new")
    await anyio.to_thread.run_sync(_write_synced, tmp, version.data)
    env = {
        **os.environ,
        "AIOCOORD_CONFIG_FILE": str(out),
        "AIOCOORD_CONFIG_NEW": str(tmp),
        "AIOCOORD_CONFIG_VERSION": version.name,
    }
    try:
        if commands.check and "{file}" in commands.check:
            await _run_cmd("check", commands.check.replace("{file}", str(tmp)), env, commands)
            _replace(tmp, out)
        else:
            _replace(tmp, out)
            if commands.check:
                try:
                    await _run_cmd("check", commands.check, env, commands)
                except ApplyFailed:
                    _restore(out, previous)
                    raise
        if commands.reload:
            try:
                await _run_cmd("reload", commands.reload, env, commands)
            except ApplyFailed:
                _restore(out, previous)
                try:
                    await _run_cmd("reload", commands.reload, env, commands)
                except ApplyFailed as again:
                    log.error("reload of the restored previous config failed too: %s", again)
                raise
    finally:
        tmp.unlink(missing_ok=True)
    return True


async def _run(args: argparse.Namespace) -> None:
    host_id = args.id or socket.gethostname()
    commands = Commands(args.check_cmd, args.reload_cmd, args.cmd_timeout)
    out: Path = args.out
    async with (
        session(args) as zk,
        serving(args, "app", zk) as metrics,
    ):
        store = aiocoord.ConfigStore(zk, args.path)
        status = StatusReporter(zk, store.status, host_id, metrics)
        running: str | None = None  # the version the file holds, as far as we applied it

        async with anyio.create_task_group() as tg, store.watch() as feed:
            tg.start_soon(status.keep)
            log.info("%s: applying %s to %s", host_id, args.path, out)
            async for version in feed:
                try:
                    changed = await apply_version(out, version, commands)
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
        log.error("the directory of --out does not exist: %s", args.out.parent)
        return 2
    return run_service(log, _run, args)
