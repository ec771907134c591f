"""``make bench``: every benchmark against one ZooKeeper started here, in one run.

Prints aiocoord beside its baselines with ratios and writes ``bench/results.json``. Figures are
from a shared 2-core machine: compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiocoord.testing import TlsCertificates, ZooKeeperServer

from . import config, counter, discovery, election, locks, render, tasks

HERE = Path(__file__).resolve().parent


def _client_run(hosts: str, lib: str, loop: str, n1: int, n100: int, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.client", "--lib", lib, "--hosts", hosts,
           "--n1", str(n1), "--n100", str(n100), *extra]  # fmt: skip
    if lib != "kazoo":
        cmd += ["--loop", loop]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=HERE.parent)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"client benchmark for {lib} failed")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_tls_bench(n1: int, n100: int) -> list[dict[str, Any]]:
    """aiocoord plain and over mutual TLS against one server (Netty: the factory TLS needs, so
    the plain rows here are not the NIO server's of the client table), alternating."""
    results = []
    with tempfile.TemporaryDirectory(prefix="aiocoord-bench-tls-") as tmp:
        certs = TlsCertificates(tmp)
        tls_args = ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert),
                    "--tls-key", str(certs.client_key)]  # fmt: skip
        with ZooKeeperServer(tls=certs.server_tls("need")) as server:
            print(f"  TLS benchmark: ZooKeeper (Netty) at {server.hosts}, TLS at "
                  f"{server.tls_hosts}; warm-up ...", flush=True)  # fmt: skip
            _client_run(server.hosts, "aiocoord", "uvloop", n1, n100)
            for loop in ("uvloop", "asyncio"):
                print(f"  TLS benchmark: aiocoord ({loop}) plain, then TLS ...", flush=True)
                results.append(_client_run(server.hosts, "aiocoord", loop, n1, n100))
                results.append(_client_run(server.tls_hosts, "aiocoord", loop, n1, n100, *tls_args))
    return results


def print_tls_table(results: list[dict[str, Any]]) -> None:
    by = {
        (r["loop"], r["tls"]): {(row["op"], row["inflight"]): row for row in r["rows"]}
        for r in results
    }
    print()
    print("TLS: aiocoord ops/s plain vs mutual TLS on one (Netty) server; ratio = TLS / plain;")
    print("latency at 1 in flight, p50 / p99 ms")
    print(f"{'op':<7}{'in flight':>10}{'loop':>9}{'plain':>10}{'TLS':>10}{'ratio':>7}"
          f"{'plain p50/p99':>18}{'TLS p50/p99':>18}")  # fmt: skip
    for loop in ("uvloop", "asyncio"):
        plain, tls = by[(loop, False)], by[(loop, True)]
        for key in plain:
            p, t = plain[key], tls[key]
            lat = ("", "")
            if key[1] == 1:
                lat = (
                    f"{p['p50_ms']:.3f} / {p['p99_ms']:.3f}",
                    f"{t['p50_ms']:.3f} / {t['p99_ms']:.3f}",
                )
            print(f"{key[0]:<7}{key[1]:>10}{loop:>9}{p['ops_per_s']:>10,.0f}"
                  f"{t['ops_per_s']:>10,.0f}{t['ops_per_s'] / p['ops_per_s']:>7.2f}"
                  f"{lat[0]:>18}{lat[1]:>18}")  # fmt: skip


def run_client_bench(hosts: str, n1: int, n100: int) -> list[dict[str, Any]]:
    results = []
    # a throwaway pass first: a cold JVM would penalise whichever library ran first
    runs = [("kazoo", "threads", True)] + [
        (lib, loop, False)
        for lib, loop in (
            ("aiocoord", "uvloop"),
            ("aiocoord", "asyncio"),
            ("kazoo", "threads"),
            ("aiozk", "uvloop"),
        )
    ]
    for lib, loop, warmup in runs:
        print(f"  client benchmark: {lib} ({loop}){' warm-up' if warmup else ''} ...", flush=True)
        result = _client_run(hosts, lib, loop, n1, n100)
        if not warmup:
            results.append(result)
    return results


def print_client_table(results: list[dict[str, Any]]) -> None:
    by = {
        (r["lib"], r["loop"]): {(row["op"], row["inflight"]): row for row in r["rows"]}
        for r in results
    }
    base = by[("aiocoord", "uvloop")]
    print()
    print("Client: ops/s (CPU us/op) per library; ratio = aiocoord(uvloop) / baseline")
    header = f"{'op':<7}{'in flight':>10}  " + "".join(
        f"{lib + ' ' + loop:>24}" for lib, loop in by
    )
    print(header + f"{'vs kazoo':>10}{'vs aiozk':>10}")
    for key in base:
        cells = "".join(
            f"{by[k][key]['ops_per_s']:>13,.0f} ({by[k][key]['cpu_us_per_op']:>6.0f}us)" for k in by
        )
        vs_kazoo = base[key]["ops_per_s"] / by[("kazoo", "threads")][key]["ops_per_s"]
        vs_aiozk = base[key]["ops_per_s"] / by[("aiozk", "uvloop")][key]["ops_per_s"]
        print(f"{key[0]:<7}{key[1]:>10}  {cells}{vs_kazoo:>9.1f}x{vs_aiozk:>9.1f}x")
    print()
    print("Latency, 1 in flight: p50 / p99 ms")
    for key in base:
        if key[1] != 1:
            continue
        cells = "".join(f"{by[k][key]['p50_ms']:>10.3f} /{by[k][key]['p99_ms']:>7.3f}" for k in by)
        print(f"{key[0]:<7}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument(
        "--client-only", action="store_true", help="only the client and TLS rows (no recipes)"
    )
    args = parser.parse_args()
    n1, n100 = (200, 1000) if args.quick else (2000, 10000)
    started = time.time()
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    print(f"machine: {machine}")
    with ZooKeeperServer() as server:
        print(f"ZooKeeper at {server.hosts}")
        client = run_client_bench(server.hosts, n1, n100)
        elections, configs, discoveries, task_results, lock_results = [], [], [], [], []
        counters: dict[str, Any] = {}
        renders: dict[str, Any] = {}
        if not args.client_only:
            print("  election handover ...", flush=True)
            elections = election.run(server.hosts, quick=args.quick)
            configs = config.run(server.hosts, quick=args.quick)
            discoveries = discovery.run(server.hosts, quick=args.quick)
            task_results = tasks.run(server.hosts, quick=args.quick)
            print("  lock and semaphore ...", flush=True)
            lock_results = locks.run(server.hosts, quick=args.quick)
            counters = counter.run(server.hosts, quick=args.quick)
            renders = render.run(server.hosts, quick=args.quick)
    tls = run_tls_bench(n1, n100)  # its own server, after the first has stopped
    print_client_table(client)
    print_tls_table(tls)
    if not args.client_only:
        election.print_table(elections)
        config.print_table(configs)
        discovery.print_table(discoveries)
        tasks.print_table(task_results)
        locks.print_table(lock_results)
        counter.print_table(counters)
        render.print_table(renders)
    out = {
        "machine": machine,
        "started": started,
        "quick": args.quick,
        "client": client,
        "tls": tls,
        "election": elections,
        "config": configs,
        "discovery": discoveries,
        "tasks": task_results,
        "locks": lock_results,
        "counter": counters,
        "render": renders,
    }
    (HERE / "results.json").write_text(json.dumps(out, indent=2))
    print(f"\nwrote {HERE / 'results.json'}")


if __name__ == "__main__":
    main()
