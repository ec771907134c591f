"""One campaign: a fresh 3-member ensemble, the workloads' processes, the nemesis's faults for
the duration, then heal, settle, read the final state, stop everything and check the histories.
Everything it ran and saw stays in the run directory: ``schedule.json``, ``faults.jsonl``,
``history/*.jsonl``, ``logs/*.log`` and ``report.json``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiocoord.testing import ZooKeeperEnsemble

from . import history, schedule
from .nemesis import Nemesis
from .workloads import WORKLOADS, Context, Report

log = logging.getLogger("chaos")


@dataclass
class Result:
    seed: int
    rundir: Path
    reports: list[Report]
    faults: dict[str, int]
    skipped: dict[str, int]
    planned: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        return [f"{r.workload}: {v}" for r in self.reports for v in r.violations] + self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rundir": str(self.rundir),
            "planned": self.planned,
            "faults": self.faults,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 1),
            "reports": [r.as_dict() for r in self.reports],
            "errors": self.errors,
        }


def faults_of(names: list[str], ctx: Context) -> list[schedule.Target]:
    return [schedule.Target(n, ctx.kinds[n]) for n in sorted(names)]


async def run(
    seed: int,
    duration: float,
    rundir: Path,
    *,
    workloads: list[str],
    session_timeout: float = 4.0,
) -> Result:
    began = time.monotonic()
    for sub in ("history", "logs", "creds"):
        (rundir / sub).mkdir(parents=True, exist_ok=True)
    ensemble = ZooKeeperEnsemble(3, data_dir=rundir / "ensemble")
    ctx = Context(rundir, ensemble, session_timeout, seed)
    try:
        await asyncio.to_thread(ensemble.start)
        active = [WORKLOADS[name](ctx) for name in workloads]
        async with ctx.client() as zk:
            for w in active:
                await w.setup(zk)
        for w in active:
            w.start()
        faults = schedule.plan(
            seed, duration, faults_of(list(ctx.procs), ctx), session_timeout=session_timeout
        )
        (rundir / "schedule.json").write_text(
            json.dumps({"seed": seed, "faults": [f.as_dict() for f in faults]}, indent=1)
        )
        log.info("seed %d: %d faults over %.0f s in %s", seed, len(faults), duration, rundir)
        nemesis = Nemesis(ensemble, ctx.procs, rundir, session_timeout)
        start = time.monotonic()
        until = start + duration
        await asyncio.gather(nemesis.run(faults, start), *(w.drive(until) for w in active))
        errors = [
            f"{name} exited with {proc.popen.returncode} during the campaign (logs/{name}.log)"
            for name, proc in ctx.procs.items()
            if proc.popen is not None and not proc.alive
        ]
        # the faults have ended; let every session and recipe recover, then look
        settle = time.monotonic() + 3 * session_timeout + 5
        await asyncio.gather(*(w.settle(settle) for w in active))
        await asyncio.sleep(max(0.0, settle - time.monotonic()))
        finals = []
        async with ctx.client() as zk:
            await zk.sync("/")  # the final reads see every acknowledged write
            for w in active:
                finals.append(await w.final(zk))
        await asyncio.to_thread(_stop, ctx)
        entries = history.read(rundir / "history")
        fault_log = history.read_file(rundir / "faults.jsonl")
        reports = [
            w.check(entries, fault_log, final) for w, final in zip(active, finals, strict=True)
        ]
        result = Result(
            seed,
            rundir,
            reports,
            dict(nemesis.counts),
            dict(nemesis.skipped),
            len(faults),
            time.monotonic() - began,
            errors,
        )
        (rundir / "report.json").write_text(json.dumps(result.as_dict(), indent=1))
        return result
    finally:
        await asyncio.to_thread(_teardown, ctx)


def _stop(ctx: Context) -> None:
    """SIGTERM every process (SIGKILL after a grace), as an operator would stop them."""
    for proc in ctx.procs.values():
        proc.resume()
        proc.signal(signal.SIGTERM)
    for proc in ctx.procs.values():
        proc.stop(grace=10.0)


def _teardown(ctx: Context) -> None:
    for proc in ctx.procs.values():
        with contextlib.suppress(Exception):
            proc.kill()
    # whatever the processes left behind (an elected CMD, a reaper) names the run directory
    subprocess.run(["pkill", "-9", "-f", str(ctx.rundir)], check=False)
    for link in ctx.links:
        link.close()
    ctx.ensemble.close()
