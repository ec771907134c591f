"""The reaper of ``aiocoord elect``: stops CMD's process group when the runner dies (SIGKILL too).

Started by the runner as ``python -I reaper.py`` (standard library only, so it starts fast and
needs no import path). It reads lines ``PGID GRACE`` on stdin, the group of the CMD running now
(``0`` when none), and waits for EOF: the runner exited, however it died. Then it stops that group
as the runner would have: SIGTERM, then SIGKILL once GRACE seconds have passed with a process of
the group still alive. It ignores SIGTERM, SIGINT and SIGHUP, which reach it with its runner (a
terminal's Ctrl-C, a service manager stopping the runner's group): it leaves only at EOF.

``group_alive`` is shared with the runner: a process group is alive while one of its processes is
not a zombie (an orphan may stay a zombie for ever under a PID 1 that does not reap).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

POLL = 0.05
#: this file, run by the runner
SCRIPT = os.path.abspath(__file__)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies do not count)."""
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except FileNotFoundError:  # pragma: no cover - no procfs: zombies count
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # gone meanwhile
        # after the command name: state, ppid, pgrp
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def stop_group(pgid: int, grace: float) -> None:
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(POLL)


def main() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    pgid, grace = 0, 0.0
    for line in sys.stdin.buffer:
        pgid_text, grace_text = line.split()
        pgid, grace = int(pgid_text), float(grace_text)
    if pgid:
        stop_group(pgid, grace)


if __name__ == "__main__":
    main()
