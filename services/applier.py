"""Applying bytes to a file safely, shared by ``aiocoord app`` and ``aiocoord render``.

``FileApplier.apply`` makes a file hold a version's bytes:

1. the bytes go to a temporary file beside the destination (written, fsynced), with the mode and
   owner of the file it replaces (or the configured ones);
2. the check command runs before the new file replaces the old one: with ``{file}`` in the
   command it checks the temporary file; without it (e.g. ``nginx -t``, which reads the file in
   place) the new file is renamed into place first and the previous one is restored if the check
   fails;
3. the rename is atomic (and the directory fsynced), then the reload command runs; if the reload
   fails the previous file is restored and reloaded again.

A broken file is never left in place over a working one: the previous file goes back on every
way out of an apply, cancellation (SIGTERM) during a command included. ``.<name>.aiocoord``
beside the file records the version it holds verified (checked and reloaded), and during an
apply ``.<name>.aiocoord.previous`` keeps a copy of the bytes in place, verified or not (or
``.<name>.aiocoord.absent`` says there were none): after a crash (kill -9) ``recover()`` puts
them back at start (removes the new file), and bytes that match no record are checked again,
never taken for "already held". ``{file}`` in a command is the temporary file's path, quoted for
the shell. The commands get ``AIOCOORD_CONFIG_FILE``,
``AIOCOORD_CONFIG_NEW`` (the temporary file) and ``AIOCOORD_CONFIG_VERSION`` in their
environment and run through ``/bin/sh -c``.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

import aiocoord
from aiocoord.transport import codec

log = logging.getLogger("aiocoord.app")


#: (uid, gid)
Owner = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Commands:
    check: str | None
    reload: str | None
    timeout: float


@dataclass(frozen=True, slots=True)
class Ownership:
    """What the written file gets: ``mode`` (None: the replaced file's, else ``new_mode``) and
    ``uid``/``gid`` (None: the replaced file's, changed only where it differs from ours and
    we may)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    new_mode: int = 0o644  # a file made where there was none: 0o666 less the umask


@dataclass(frozen=True, slots=True)
class Verified:
    """The record beside ``--out``: the version whose bytes it holds, checked and reloaded."""

    version: str
    sha256: str


class ApplyFailed(Exception):
    """A version could not be applied; the previous file is in place."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_synced(path: Path, data: bytes, mode: int = 0o600, owner: Owner | None = None) -> None:
    """Write ``path`` (made 0600, then given ``mode`` and ``owner``: the bytes are never readable
    by more than the final file's readers) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as f:
        f.write(data)
        f.flush()
        if owner is not None:
            os.fchown(fd, *owner)  # (before the mode: a chown clears set-id bits)
        os.fchmod(fd, mode)
        os.fsync(fd)


def _read_if_exists(path: Path) -> tuple[bytes, os.stat_result] | None:
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno())
    except FileNotFoundError:
        return None


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileApplier:
    """Applies versions to ``out`` and keeps, beside it, the record of the version it holds
    verified (``.<name>.aiocoord``) and, while an apply is under way, a copy of those verified
    bytes (``.<name>.aiocoord.previous``) to restore after a crash."""

    def __init__(self, out: Path, commands: Commands, ownership: Ownership) -> None:
        self.out = out
        self.commands = commands
        self.ownership = ownership
        self.record = out.with_name(f".{out.name}.aiocoord")
        self.backup = out.with_name(f".{out.name}.aiocoord.previous")
        #: during an apply over no file: says there was none (a crash then removes the new one)
        self.absent = out.with_name(f".{out.name}.aiocoord.absent")
        #: what ``out`` holds, checked and reloaded (None: nothing verified yet)
        self.verified: Verified | None = None

    # -- start-up --------------------------------------------------------------------------
    def recover(self) -> None:
        """Read the record, and undo an apply that a crash interrupted: unless ``out`` holds
        the verified bytes (the apply was over), what was in place before it goes back (the copy
        kept during the apply; no file, when there was none), verified or not. Bytes that match
        no record are never taken for verified: the next apply checks them again."""
        self.verified = self._read_record()
        for name in os.listdir(self.out.parent):  # temporary files of an interrupted apply
            if name.startswith(f".{self.out.name}.") and name.endswith((".new", ".restore")):
                (self.out.parent / name).unlink(missing_ok=True)
        verified, current = self.verified, _read_if_exists(self.out)
        if current is None or verified is None or _sha256(current[0]) != verified.sha256:
            saved = _read_if_exists(self.backup)
            if saved is not None:
                _replace(self.backup, self.out)
                log.warning("%s: an apply was interrupted: the file it replaced is back", self.out)
                current = saved
            elif self.absent.exists() and current is not None:
                self.out.unlink()
                log.warning("%s: an apply was interrupted: removed (there was none before)",
                            self.out)  # fmt: skip
                current = None
            if verified is not None and (current is None or _sha256(current[0]) != verified.sha256):
                log.warning("%s does not hold the verified %s: its bytes will be checked again",
                            self.out, verified.version)  # fmt: skip
                self.verified = None
        self.backup.unlink(missing_ok=True)
        self.absent.unlink(missing_ok=True)

    def _read_record(self) -> Verified | None:
        try:
            raw = codec.loads_object(self.record.read_bytes(), what="record")
            return Verified(str(raw["version"]), str(raw["sha256"]))
        except FileNotFoundError:
            return None
        except (codec.DecodeError, KeyError) as exc:
            log.warning("ignoring the unreadable record %s: %s", self.record, exc)
            return None

    def _write_record(self, verified: Verified) -> None:
        tmp = self.record.with_name(f"{self.record.name}.tmp")
        _write_synced(tmp, codec.dumps({"version": verified.version, "sha256": verified.sha256}))
        _replace(tmp, self.record)

    # -- applying --------------------------------------------------------------------------
    def _target(self, previous: os.stat_result | None) -> tuple[int, Owner | None]:
        """The mode and the owner (None: ours, no chown) the new file gets."""
        o = self.ownership
        if o.mode is not None:
            mode = o.mode
        else:
            mode = stat.S_IMODE(previous.st_mode) if previous is not None else o.new_mode
        if o.uid is not None or o.gid is not None:  # --owner: always (a failure fails the apply)
            uid = o.uid if o.uid is not None else previous.st_uid if previous else os.geteuid()
            gid = o.gid if o.gid is not None else previous.st_gid if previous else os.getegid()
            return mode, (uid, gid)
        if previous is None:
            return mode, None
        kept = _kept_owner(previous)
        if kept is None and (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
            log.warning(
                "cannot keep the owner %d:%d of %s (not allowed): the new file is ours",
                previous.st_uid, previous.st_gid, self.out,
            )  # fmt: skip
        return mode, kept

    async def apply(self, version: aiocoord.ConfigVersion) -> bool:
        """Make ``out`` hold ``version`` (check, replace, reload); returns False when it already
        did (verified). Raises ``ApplyFailed`` (or ``OSError``) with the previous file in place;
        cancelled (SIGTERM), it puts the previous file back first."""
        out, commands = self.out, self.commands
        found = await anyio.to_thread.run_sync(_read_if_exists, out)
        previous, previous_stat = found if found is not None else (None, None)
        sha256 = _sha256(version.data)
        verified = self.verified
        if previous == version.data and verified is not None and verified.sha256 == sha256:
            return False
        mode, owner = self._target(previous_stat)
        tmp = out.with_name(f".{out.name}.{version.name.rsplit('/', 1)[-1]}.new")
        env = {
            **os.environ,
            "AIOCOORD_CONFIG_FILE": str(out),
            "AIOCOORD_CONFIG_NEW": str(tmp),
            "AIOCOORD_CONFIG_VERSION": version.name,
        }
        replaced = reloading = done = False
        try:
            try:
                await anyio.to_thread.run_sync(_write_synced, tmp, version.data, mode, owner)
            except PermissionError as exc:
                raise ApplyFailed(
                    f"cannot give the file mode {mode:o}, owner {owner}: {exc}"
                ) from exc
            # what is in place (a copy, or a note that there is nothing), kept until the apply is
            # over: a crash during it is undone at the next start, verified bytes or not
            if previous is not None and previous_stat is not None:
                await anyio.to_thread.run_sync(
                    _write_synced,
                    self.backup,
                    previous,
                    stat.S_IMODE(previous_stat.st_mode),
                    _kept_owner(previous_stat),
                )
            else:
                await anyio.to_thread.run_sync(_write_synced, self.absent, b"")
            if commands.check and "{file}" in commands.check:
                check = commands.check.replace("{file}", shlex.quote(str(tmp)))
                await _run_cmd("check", check, env, commands)
            _replace(tmp, out)
            replaced = True
            if commands.check and "{file}" not in commands.check:
                await _run_cmd("check", commands.check, env, commands)
            if commands.reload:
                reloading = True
                await _run_cmd("reload", commands.reload, env, commands)
            done = True
        finally:
            # on every way out (a failed command, an error, cancellation): the previous file back
            tmp.unlink(missing_ok=True)
            if replaced and not done:
                self._restore(previous, previous_stat)
                if reloading and commands.reload:
                    with anyio.CancelScope(shield=True):
                        await self._reload_restored(env)
            if done:
                self.verified = Verified(version.name, sha256)
                self._write_record(self.verified)
            self.backup.unlink(missing_ok=True)
            self.absent.unlink(missing_ok=True)
        return True

    def _restore(self, previous: bytes | None, previous_stat: os.stat_result | None) -> None:
        """Put ``previous`` back (synchronously: nothing can interrupt it half-way)."""
        if previous is None or previous_stat is None:
            self.out.unlink(missing_ok=True)
        else:
            tmp = self.out.with_name(f".{self.out.name}.restore")
            mode = stat.S_IMODE(previous_stat.st_mode)
            _write_synced(tmp, previous, mode, _kept_owner(previous_stat))
            _replace(tmp, self.out)
        log.warning("%s: the previous file is back in place", self.out)

    async def _reload_restored(self, env: dict[str, str]) -> None:
        assert self.commands.reload is not None
        env = {**env, "AIOCOORD_CONFIG_VERSION": self.verified.version if self.verified else ""}
        try:
            await _run_cmd("reload", self.commands.reload, env, self.commands)
        except ApplyFailed as again:
            log.error("reload of the restored previous config failed too: %s", again)


def _kept_owner(st: os.stat_result) -> Owner | None:
    """The owner of ``st`` for a file that replaces it: None when it is ours (no chown needed)
    or when we may not give it."""
    owner = (st.st_uid, st.st_gid)
    if owner == (os.geteuid(), os.getegid()) or not _may_chown(owner):
        return None
    return owner


def _may_chown(owner: Owner) -> bool:
    """Whether this process may give a file ``owner`` (root may; others only their own uid and
    one of their groups)."""
    if os.geteuid() == 0:
        return True
    return owner[0] == os.geteuid() and (owner[1] == os.getegid() or owner[1] in os.getgroups())


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


def parse_ownership(
    mode: str | None, owner: str | None, *, names: tuple[str, str] = ("--mode", "--owner")
) -> Ownership:
    """``--mode`` (octal) and ``--owner`` (user[:group], names or numbers); ValueError when
    malformed or unknown, naming the setting by ``names`` (of the mode, of the owner)."""
    mode_name, owner_name = names
    umask = os.umask(0o022)
    os.umask(umask)
    ownership = Ownership(new_mode=0o666 & ~umask)
    if mode is not None:
        try:
            value = int(mode, 8)
        except ValueError:
            raise ValueError(f"{mode_name} {mode!r} is not an octal mode (e.g. 0640)") from None
        if not 0 <= value <= 0o7777:
            raise ValueError(f"{mode_name} {mode!r} is out of range (0 to 7777)")
        ownership = replace(ownership, mode=value)
    if owner is not None:
        user, _, group = owner.partition(":")
        uid = _lookup(user, pwd.getpwnam, "user", owner_name) if user else None
        gid = _lookup(group, grp.getgrnam, "group", owner_name) if group else None
        if uid is None and gid is None:
            raise ValueError(f"{owner_name} {owner!r}: expected USER[:GROUP]")
        ownership = replace(ownership, uid=uid, gid=gid)
    return ownership


def _lookup(name: str, by_name: Callable[[str], Any], what: str, option: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return int(by_name(name)[2])
    except KeyError:
        raise ValueError(f"{option}: no {what} named {name!r}") from None
