"""What every workload shares: the campaign context it runs in and the report it returns."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiocoord import Client
from aiocoord.testing import ZooKeeperEnsemble

from ..cluster import Link, Proc, python
from ..history import Entry
from ..schedule import CLIENT_FAULTS

ALL_CLIENT_FAULTS = tuple(sorted(CLIENT_FAULTS))
#: every client fault but the server-side expiry (for processes whose credentials we cannot see;
#: a long link stall still expires their sessions, as a partition does)
NO_EXPIRY = tuple(k for k in ALL_CLIENT_FAULTS if k != "session-expire")


@dataclass
class Context:
    rundir: Path
    ensemble: ZooKeeperEnsemble
    session_timeout: float
    seed: int = 0
    procs: dict[str, Proc] = field(default_factory=dict)
    kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)

    @property
    def tick(self) -> float:
        return 0.2

    def spawn(
        self,
        name: str,
        argv: Callable[[Link, int], Sequence[str]],
        *,
        kinds: Sequence[str] = NO_EXPIRY,
        expirable: bool = False,
        start: bool = True,
    ) -> Proc:
        """A client process behind a link of its own, that the nemesis may hit with ``kinds``."""
        link = Link(self.ensemble)
        self.links.append(link)
        proc = Proc(name, lambda inc: argv(link, inc), self.rundir, link, expirable=expirable)
        self.procs[name] = proc
        self.kinds[name] = tuple(kinds)
        if start:
            proc.start()
        return proc

    def program(self, kind: str, name: str, link: Link, *extra: str) -> list[str]:
        """The command line of one of chaos.procs' programs."""
        return python(
            "-m",
            "chaos.procs",
            kind,
            "--rundir",
            str(self.rundir),
            "--name",
            name,
            "--hosts",
            link.hosts,
            "--session-timeout",
            str(self.session_timeout),
            *extra,
        )

    def aiocoord(self, link: Link, *args: str) -> list[str]:
        """An ``aiocoord`` command line through ``link``."""
        return python(
            "-m",
            "aiocoord._cli",
            *args[:1],
            "--zk",
            link.hosts,
            "--session-timeout",
            str(self.session_timeout),
            *args[1:],
        )

    def client(self) -> Client:
        """A client straight to the ensemble (no proxy): for set-up and the final reads."""
        return Client(self.ensemble.hosts, session_timeout=10.0)


@dataclass
class Report:
    workload: str
    ops: Counter[str] = field(default_factory=Counter)  # "<f> <outcome>" -> count
    violations: list[str] = field(default_factory=list)
    recovery: dict[str, float] = field(default_factory=dict)  # worst recovery times, seconds
    notes: list[str] = field(default_factory=list)

    def count(self, f: str, outcome: str) -> None:
        self.ops[f"{f} {outcome}"] += 1

    def violation(self, text: str) -> None:
        self.violations.append(text)

    def once(self, what: str, result: str, n: int) -> None:
        """An operation whose effect is found ``n`` times: once when acknowledged, at most once
        when its outcome is unknown, never when it failed."""
        if result == "ok" and n != 1:
            self.violation(f"acknowledged {what} exists {n}x")
        elif result == "info" and n > 1:
            self.violation(f"{what} duplicated ({n}x)")
        elif result == "fail" and n:
            self.violation(f"failed {what} exists {n}x")

    def worst(self, what: str, seconds: float) -> None:
        self.recovery[what] = max(self.recovery.get(what, 0.0), round(seconds, 2))

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "ops": dict(self.ops),
            "violations": self.violations,
            "recovery": self.recovery,
            "notes": self.notes,
        }


class Workload:
    """Override ``start``, ``final`` and ``check``; ``drive`` when the controller acts too."""

    name = "workload"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def setup(self, zk: Client) -> None:
        """Create the znodes the processes expect, before they start."""

    def start(self) -> None:
        raise NotImplementedError

    async def drive(self, until: float) -> None:
        """Operations from the controller while the faults run, until ``time.monotonic()`` passes
        ``until``."""

    async def settle(self, deadline: float) -> None:
        """After the faults: wait (until ``deadline`` at most) for the system to converge."""

    async def final(self, zk: Client) -> Any:
        """The state to check, read after the faults have healed, before the processes stop."""
        return None

    def check(self, entries: list[Entry], faults: list[Entry], final: Any) -> Report:
        raise NotImplementedError


def now() -> float:
    return time.time()
