"""Election handover: after a graceful resign (many rounds) and after kill -9 of the leader's
process (relative to the session timeout), aiocoord beside kazoo's Election recipe."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

import aiocoord

from .stats import latency

KILL_TIMEOUT = 2.0  # session timeout of the killed leaders


async def _aiocoord_resign(hosts: str, rounds: int) -> list[float]:
    path = f"/bench-election-{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    async with (
        aiocoord.Client(hosts) as za,
        aiocoord.Client(hosts) as zb,
        anyio.create_task_group() as tg,
    ):
        resigned_at = [0.0]
        turn = [anyio.Event(), anyio.Event()]

        async def contender(zk: aiocoord.Client, me: int) -> None:
            election = aiocoord.Election(zk, path)
            while len(samples) < rounds:
                async with election.lead():
                    if resigned_at[0]:
                        samples.append(time.perf_counter() - resigned_at[0])
                    # give the other one time to be waiting, then resign
                    await turn[me].wait()
                    turn[me] = anyio.Event()
                    resigned_at[0] = time.perf_counter()

        async def pacer() -> None:
            while len(samples) < rounds:
                await anyio.sleep(0.01)  # both contend before each resign
                for ev in turn:
                    ev.set()

        tg.start_soon(contender, za, 0)
        await anyio.sleep(0.1)
        tg.start_soon(contender, zb, 1)
        await pacer()
        tg.cancel_scope.cancel()
    return samples[:rounds]


def _kazoo_resign(hosts: str, rounds: int) -> list[float]:
    from kazoo.client import KazooClient

    path = f"/bench-kazoo-election-{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    resigned_at = [0.0]
    stop = threading.Event()
    clients = [KazooClient(hosts=hosts, timeout=10) for _ in range(2)]
    for c in clients:
        c.start(timeout=15)

    def contend(client: Any) -> None:
        election = client.Election(path)

        def body() -> None:
            if resigned_at[0]:
                samples.append(time.perf_counter() - resigned_at[0])
            time.sleep(0.01)  # the other one is waiting by now
            resigned_at[0] = time.perf_counter()

        while not stop.is_set() and len(samples) < rounds:
            election.run(body)

    threads = [threading.Thread(target=contend, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
        time.sleep(0.1)
    deadline = time.monotonic() + 300
    while len(samples) < rounds and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for c in clients:
        c.stop()
        c.close()
    return samples[:rounds]


_AIOCOORD_LEADER = """
import sys, anyio, aiocoord
async def main(hosts, path, timeout):
    async with aiocoord.Client(hosts, session_timeout=timeout) as zk:
        async with aiocoord.Election(zk, path).lead():
            print("leading", flush=True)
            await anyio.sleep_forever()
aiocoord.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
"""

_KAZOO_LEADER = """
import sys, time
from kazoo.client import KazooClient
zk = KazooClient(hosts=sys.argv[1], timeout=float(sys.argv[3]))
zk.start()
def lead():
    print("leading", flush=True)
    time.sleep(1000)
zk.Election(sys.argv[2]).run(lead)
"""


async def _kill_handover(hosts: str, lib: str, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        path = f"/bench-kill-{uuid.uuid4().hex[:8]}"
        script = _AIOCOORD_LEADER if lib == "aiocoord" else _KAZOO_LEADER
        cmd = [sys.executable, "-c", script, hosts, path, str(KILL_TIMEOUT)]
        async with await anyio.open_process(cmd, stderr=None) as proc:
            try:
                assert proc.stdout is not None
                with anyio.fail_after(30):
                    line = await BufferedByteReceiveStream(proc.stdout).receive_until(b"\n", 1024)
                assert line.strip() == b"leading", line
                if lib == "aiocoord":
                    samples.append(await _aiocoord_successor(hosts, path, proc))
                else:
                    samples.append(
                        await anyio.to_thread.run_sync(_kazoo_successor, hosts, path, proc)
                    )
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
    return samples


async def _aiocoord_successor(hosts: str, path: str, leader: anyio.abc.Process) -> float:
    async with aiocoord.Client(hosts) as zk:
        election = aiocoord.Election(zk, path)
        async with anyio.create_task_group() as tg:
            led = anyio.Event()

            async def contend() -> None:
                async with election.lead():
                    led.set()

            tg.start_soon(contend)
            for _ in range(500):  # until its candidate node exists
                if election.candidate_path is not None:
                    break
                await anyio.sleep(0.01)
            await anyio.sleep(0.2)
            killed = time.perf_counter()
            leader.kill()
            with anyio.fail_after(KILL_TIMEOUT * 5):
                await led.wait()
            return time.perf_counter() - killed


def _kazoo_successor(hosts: str, path: str, leader: anyio.abc.Process) -> float:
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=hosts, timeout=10)
    zk.start(timeout=15)
    led = threading.Event()
    t = threading.Thread(target=lambda: zk.Election(path).run(led.set), daemon=True)
    t.start()
    time.sleep(0.3)
    killed = time.perf_counter()
    leader.kill()
    led.wait(KILL_TIMEOUT * 5)
    took = time.perf_counter() - killed
    zk.stop()
    zk.close()
    return took


def run(hosts: str, *, quick: bool) -> dict[str, Any]:
    rounds = 20 if quick else 200
    kills = 1 if quick else 3
    out: dict[str, Any] = {"session_timeout_s": KILL_TIMEOUT}
    out["resign"] = {
        "aiocoord": latency(
            anyio.run(_aiocoord_resign, hosts, rounds, backend_options={"use_uvloop": True})
        ),
        "kazoo": latency(_kazoo_resign(hosts, rounds)),
    }
    out["kill"] = {
        lib: latency(anyio.run(_kill_handover, hosts, lib, kills)) for lib in ("aiocoord", "kazoo")
    }
    return out


def print_table(result: dict[str, Any]) -> None:
    print()
    print("Election handover")
    r, k = result["resign"], result["kill"]
    t = result["session_timeout_s"] * 1000
    print(f"{'':<28}{'aiocoord':>22}{'kazoo':>22}{'ratio':>8}")
    print(
        f"{'graceful resign p50 / p99':<28}"
        f"{r['aiocoord']['p50_ms']:>11.2f} /{r['aiocoord']['p99_ms']:>6.2f} ms"
        f"{r['kazoo']['p50_ms']:>11.2f} /{r['kazoo']['p99_ms']:>6.2f} ms"
        f"{r['kazoo']['p50_ms'] / r['aiocoord']['p50_ms']:>7.1f}x"
    )
    print(
        f"{'kill -9, p50 (x timeout)':<28}"
        f"{k['aiocoord']['p50_ms']:>12.0f} ms ({k['aiocoord']['p50_ms'] / t:.2f}x)"
        f"{k['kazoo']['p50_ms']:>8.0f} ms ({k['kazoo']['p50_ms'] / t:.2f}x)"
    )
