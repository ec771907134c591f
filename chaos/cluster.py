"""What the nemesis acts on: a link (one TCP proxy per ensemble member) for each client process,
and the client processes themselves, each in a process group of its own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aiocoord.testing import TcpProxy, ZooKeeperEnsemble

#: the repository: the processes import chaos (and a worker's --handler) from here
ROOT = str(Path(__file__).resolve().parent.parent)


class Link:
    """A client's network: one proxy per member, so the nemesis can cut, stall or heal this one
    client while the others keep talking, and the client still fails over between members."""

    def __init__(self, ensemble: ZooKeeperEnsemble) -> None:
        self.proxies = [TcpProxy.to(m.address).start() for m in ensemble]

    @property
    def hosts(self) -> str:
        return ",".join(p.address for p in self.proxies)

    def cut(self) -> None:
        for p in self.proxies:
            p.cut()

    def stall(self) -> None:
        for p in self.proxies:
            p.stall()

    def resume(self) -> None:
        for p in self.proxies:
            p.resume()

    def close(self) -> None:
        for p in self.proxies:
            p.close()


class Proc:
    """One client process under test. ``argv(incarnation)`` builds its command line; every start
    is a new incarnation (its history and session credentials are its own)."""

    def __init__(
        self,
        name: str,
        argv: Callable[[int], Sequence[str]],
        rundir: Path,
        link: Link,
        *,
        expirable: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._argv = argv
        self.rundir = rundir
        self.link = link
        self.expirable = expirable  # it writes creds/<name>.json: session-expire applies
        self._env = env or {}
        self.incarnation = 0
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self) -> None:
        self.incarnation += 1
        log = open(self.rundir / "logs" / f"{self.name}.log", "ab")  # noqa: SIM115
        env = {
            **os.environ,
            **self._env,
            "AIOCOORD_CHAOS_RUNDIR": str(self.rundir),
            "AIOCOORD_CHAOS_NAME": self.name,
            "AIOCOORD_CHAOS_INCARNATION": str(self.incarnation),
            "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
        with log:
            self.popen = subprocess.Popen(
                list(self._argv(self.incarnation)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)
        self.paused = False

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGCONT and SIGTERM, SIGKILL after ``grace``; returns the exit status."""
        if self.popen is None:
            return None
        self.resume()
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.returncode

    def credentials(self) -> tuple[int, bytes] | None:
        """The session id and password the current incarnation last wrote, if any."""
        path = self.rundir / "creds" / f"{self.name}.json"
        try:
            creds = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if creds.get("incarnation") != self.incarnation:
            return None
        return int(creds["session_id"]), bytes.fromhex(creds["passwd"])


def python(*args: str) -> list[str]:
    """A command line running this interpreter."""
    return [sys.executable, *args]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(0.1)
