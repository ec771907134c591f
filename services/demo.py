"""``aiocoord demo``: the session layer on one machine, visibly, ending in a summary table.

Without --zk it starts its own 3-member ZooKeeper ensemble. Steps: open a session, write and watch,
pipeline a burst of reads, kill the ensemble member under the session (it moves, same session id,
its ephemeral node intact), expire a session on the server (LOST, then a new session). Exits 0, or
non-zero naming the step that failed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio

import aiocoord
from aiocoord import Client, SessionState
from aiocoord.testing import ZooKeeperEnsemble, ZooKeeperNotFound, expire_session

log = logging.getLogger("aiocoord.demo")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="show the whole system on one machine",
        description="Runs the demo against --zk, or (by default) a 3-member ZooKeeper ensemble "
        "it starts itself on free loopback ports, and prints a summary table.",
    )
    demo.add_argument(
        "--zk",
        metavar="HOSTS",
        default=None,
        help="use this ZooKeeper instead of starting an ensemble (the member-kill step is then "
        "skipped)",
    )
    demo.set_defaults(func=run_demo)


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""


@dataclass
class Demo:
    hosts: str
    ensemble: ZooKeeperEnsemble | None
    steps: list[Step] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def step(self, name: str, limit: float = 30.0) -> AsyncIterator[Step]:
        step = Step(name)
        self.steps.append(step)
        print(f"--> {name}", flush=True)
        started = time.perf_counter()
        try:
            with anyio.fail_after(limit):
                yield step
            step.ok = True
        finally:
            step.seconds = time.perf_counter() - started
            mark = "ok" if step.ok else "FAILED"
            print(f"    {mark} in {step.seconds:.2f}s  {step.detail}", flush=True)


async def _wait_state(feed: aiocoord.SessionFeed, state: SessionState) -> list[str]:
    seen = []
    async for event in feed:
        seen.append(event.state.value)
        if event.state is state:
            return seen
    raise RuntimeError(f"session closed before {state.value}")


async def _demo(d: Demo) -> None:
    async with d.step("open a session") as s:
        zk = Client(d.hosts, namespace="/aiocoord-demo", session_timeout=8)
        await zk.__aenter__()
        s.detail = (
            f"session 0x{zk.session_id:x} on {zk.connected_host},"
            f" timeout {zk.negotiated_timeout:g}s"
        )
    try:
        async with (
            Client(d.hosts, namespace="/aiocoord-demo") as writer,
            zk.session_events() as feed,
        ):
            async with d.step("write, watch, get notified") as s:
                await zk.delete("/config", recursive=True)
                await writer.create("/config", b'{"version": 1}')
                fired = anyio.Event()
                seen: list[aiocoord.WatchEvent] = []

                def on_change(event: aiocoord.WatchEvent) -> None:
                    seen.append(event)
                    fired.set()

                await zk.get("/config", watch=on_change)
                t0 = time.perf_counter()
                await writer.set("/config", b'{"version": 2}')
                await fired.wait()
                latency = (time.perf_counter() - t0) * 1000
                s.detail = f"{seen[0].type.name} on {seen[0].path} after {latency:.1f} ms"

            async with d.step("pipeline 2,000 reads on one connection") as s:
                t0 = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(20):
                        tg.start_soon(_reads, zk, 100)
                rate = 2000 / (time.perf_counter() - t0)
                s.detail = f"{rate:,.0f} reads/s"

            await zk.create("/owned-by-demo", b"", ephemeral=True)
            if d.ensemble is not None:
                async with d.step("kill -9 the ZooKeeper member under the session") as s:
                    victim = d.ensemble.index_of(zk.connected_host)
                    session = zk.session_id
                    d.ensemble.members[victim].kill()
                    states = await _wait_state(feed, SessionState.RECONNECTED)
                    stat = await zk.exists("/owned-by-demo")
                    if zk.session_id != session or stat is None:
                        raise RuntimeError("the session did not survive the member's death")
                    s.detail = (
                        f"member {victim + 1} killed; {' -> '.join(states)} to "
                        f"{zk.connected_host}, same session, ephemeral kept"
                    )
                    d.ensemble.members[victim].start()

            async with d.step("server-side session expiry") as s:
                old = zk.session_id
                await expire_session(zk)
                states = await _wait_state(feed, SessionState.CONNECTED)
                gone = await zk.exists("/owned-by-demo") is None
                s.detail = (
                    f"{' -> '.join(states)}; new session 0x{zk.session_id:x} "
                    f"(was 0x{old:x}); old ephemeral {'gone' if gone else 'STILL THERE'}"
                )
                if not gone:
                    raise RuntimeError("the expired session's ephemeral node survived")
            await zk.delete("/config", recursive=True)
    finally:
        with anyio.CancelScope(shield=True):
            await zk.aclose()


async def _reads(zk: Client, n: int) -> None:
    for _ in range(n):
        await zk.exists("/config")


def _summary(d: Demo) -> None:
    width = max(len(s.name) for s in d.steps)
    print()
    print(f"{'step':<{width}}  {'result':<6}  {'time':>7}")
    print(f"{'-' * width}  ------  -------")
    for s in d.steps:
        print(f"{s.name:<{width}}  {'ok' if s.ok else 'FAILED':<6}  {s.seconds:>6.2f}s")


def run_demo(args: argparse.Namespace) -> int:
    ensemble: ZooKeeperEnsemble | None = None
    started = time.perf_counter()
    if args.zk is None:
        print("--> start a 3-member ZooKeeper ensemble", flush=True)
        try:
            ensemble = ZooKeeperEnsemble(3)
            ensemble.start()
        except ZooKeeperNotFound as exc:
            print(f"    FAILED: {exc}")
            return 2
        print(f"    ok in {time.perf_counter() - started:.2f}s  {ensemble.hosts}", flush=True)
    demo = Demo(args.zk or (ensemble.hosts if ensemble else ""), ensemble)
    failed: str | None = None
    try:
        result = aiocoord.run(_run_guarded, demo)
        if result is None:
            failed = "interrupted"
        elif result:
            failed = result
    finally:
        if ensemble is not None:
            ensemble.close()
    _summary(demo)
    if failed:
        print(f"\ndemo FAILED at: {failed}")
        return 1
    print(f"\ndemo finished in {time.perf_counter() - started:.1f}s")
    return 0


async def _run_guarded(d: Demo) -> str:
    """'' on success, else the name of the step that failed."""
    try:
        await _demo(d)
    except Exception as exc:
        name = next((s.name for s in d.steps if not s.ok), "setup")
        log.error("step %r failed: %r", name, exc)
        return name
    return ""
