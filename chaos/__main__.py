"""``make chaos``: the fault campaign over several seeds, one table at the end.

    python -m chaos --duration 600 --seeds 1,2,3 [--workloads session,election,...]

Exits 1 when any checker found a violation (the table names the seed that found it; replay it
with ``--seeds N``: the same seed fires the same faults in the same order at the same offsets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .campaign import Result, run
from .workloads import WORKLOADS


def table(results: list[Result]) -> str:
    lines = []
    faults: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    ops: Counter[str] = Counter()
    worst: dict[str, tuple[float, int]] = {}
    for r in results:
        faults.update(r.faults)
        skipped.update(r.skipped)
        for rep in r.reports:
            ops.update({f"{rep.workload}: {k}": v for k, v in rep.ops.items()})
            for what, seconds in rep.recovery.items():
                if seconds >= worst.get(what, (-1.0, 0))[0]:
                    worst[what] = (seconds, r.seed)
    seconds = sum(r.seconds for r in results)
    seeds = ", ".join(str(r.seed) for r in results)
    lines.append(f"chaos campaign: seeds {seeds}; {seconds / 60:.1f} min in all")
    lines.append("")
    lines.append("| fault | injected | skipped |")
    lines.append("|---|---:|---:|")
    for kind in sorted(set(faults) | set(skipped)):
        lines.append(f"| {kind} | {faults[kind]} | {skipped[kind]} |")
    lines.append(f"| **all** | {sum(faults.values())} | {sum(skipped.values())} |")
    lines.append("")
    lines.append("| operation | ok | fail | info |")
    lines.append("|---|---:|---:|---:|")
    names = sorted({k.rsplit(" ", 1)[0] for k in ops})
    for name in names:
        row = [ops.get(f"{name} {o}", 0) for o in ("ok", "fail", "info")]
        lines.append(f"| {name} | {row[0]} | {row[1]} | {row[2]} |")
    lines.append("")
    lines.append("| worst recovery | seconds | seed |")
    lines.append("|---|---:|---:|")
    for what, (secs, seed) in sorted(worst.items()):
        lines.append(f"| {what} | {secs:.2f} | {seed} |")
    lines.append("")
    violations = [(r.seed, v) for r in results for v in r.violations]
    lines.append(f"invariant violations: {len(violations)}")
    for seed, v in violations:
        lines.append(f"  seed {seed}: {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds per seed (600)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (1,2,3)")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, of {', '.join(WORKLOADS)} (all)",
    )
    parser.add_argument("--session-timeout", type=float, default=4.0, help="seconds (4)")
    parser.add_argument("--out", type=Path, help="where the runs go (a new temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("aiocoord").setLevel(logging.WARNING)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}")
    out = args.out or Path(tempfile.mkdtemp(prefix="aiocoord-chaos-"))
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        print(f"seed {seed}: running {args.duration:.0f} s of {', '.join(workloads)}", flush=True)
        rundir = out / f"seed-{seed}-{int(time.time())}"
        result = asyncio.run(
            run(
                seed,
                args.duration,
                rundir,
                workloads=workloads,
                session_timeout=args.session_timeout,
            )
        )
        results.append(result)
        print(f"seed {seed}: {len(result.violations)} violation(s); see {rundir}", flush=True)
    print(table(results))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
