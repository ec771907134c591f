"""``aiocoord demo``: the whole system on one machine, visibly, ending in a summary table.

Without --zk it starts its own 3-member ZooKeeper ensemble. Every service is a separate
``aiocoord`` process (logs in a temporary directory, named on failure):

1. two config agents elect a leader, which serves the trigger port;
2. a trigger publishes a config that three apps apply to their files;
3. three service instances register with TCP health checks and are discovered, and ``render``
   keeps an nginx upstream of them; one fails its check and is dropped, from the upstream too;
4. a dispatcher and three workers complete 200 tasks;
5. the agent leader is killed (kill -9): the standby takes over the trigger port, and the next
   config reaches all three apps;
6. one ZooKeeper member is killed: sessions move to the others, and nothing fails over (same
   agent leader, same dispatcher, instances still registered, tasks and configs still flow).

Each step prints the ``aiocoord`` command lines it started, ready to paste (the ensemble's line
is the ``aiocoord zk start`` that serves the same ports). The demo's own log records go to
``demo.log`` beside the services' logs; only errors reach the terminal. Exits 0, or non-zero
naming the step that failed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

import aiocoord
from aiocoord import Client
from aiocoord.testing import ZooKeeperEnsemble, ZooKeeperNotFound, free_port, port_in_use

from .common import TextFormatter, log_level, zk_hosts
from .status_cmd import four_letter

log = logging.getLogger("aiocoord.demo")

NAMESPACE = "/aiocoord-demo"
UPSTREAM = """\
upstream api {
{% for i in services.api if i.enabled %}    server {{ i.address }}:{{ i.port }};
{% endfor %}}
"""
RENDER = """\
wait = { min = 0.1, max = 1 }
[[template]]
source = "upstream.conf.j2"
destination = "upstream.conf"
check = "grep -q server {file}"
services = { api = "api" }
"""
CONFIG = "/nginx/conf"
SESSION_TIMEOUT = "4"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="show the whole system on one machine",
        description="Runs config agents, apps, registered services, a dispatcher and workers as "
        "separate processes against --zk, or (by default) a 3-member ZooKeeper ensemble it "
        f"starts on free loopback ports; kills a leader and a ZooKeeper member; prints a summary "
        f"table. Everything lives under {NAMESPACE}.",
    )
    demo.add_argument(
        "--zk",
        metavar="HOSTS",
        type=zk_hosts,
        default=None,
        help="use this ZooKeeper instead of starting an ensemble (the member-kill step is then "
        f"skipped; {NAMESPACE} is deleted first)",
    )
    demo.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    demo.set_defaults(func=run_demo)


async def tagged(task: aiocoord.Task) -> bytes:
    """The demo workers' handler: the payload, tagged with the worker that ran it."""
    return task.payload + b" by " + task.worker.encode()


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""


def show(*argv: str) -> None:
    """Print a command line the way a user would type it."""
    print(f"    {shlex.join(['aiocoord', *argv])}", flush=True)


class Services:
    """The demo's service processes (``aiocoord ...``, run as ``python -m`` of this package so
    that they are the same code), each logging to a file."""

    def __init__(self, hosts: str, logs: Path) -> None:
        self.hosts = hosts
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        common = [
            "--zk",
            self.hosts,
            "--namespace",
            NAMESPACE,
            "--session-timeout",
            SESSION_TIMEOUT,
        ]
        out = (self.logs / f"{name}.log").open("ab")
        argv = [args[0], *common, *args[1:]]
        show(*argv)
        cmd = [sys.executable, "-m", str(__package__), *argv]
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
        out.close()
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        os.kill(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def died(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None and p.returncode != -9]


@dataclass
class Demo:
    hosts: str
    ensemble: ZooKeeperEnsemble | None
    services: Services
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
            dead = self.services.died()
            if dead:
                raise RuntimeError(f"service process(es) exited: {', '.join(dead)}")
            step.ok = True
        finally:
            step.seconds = time.perf_counter() - started
            mark = "ok" if step.ok else "FAILED"
            print(f"    {mark} in {step.seconds:.2f}s  {step.detail}", flush=True)


async def _until(predicate: object, interval: float = 0.02) -> None:
    """Poll an async predicate (the state lives in other processes and on the server)."""
    while not await predicate():  # type: ignore[operator]  # noqa: ASYNC110
        await anyio.sleep(interval)


async def _publish(port: int, data: str) -> str:
    """Publish through the trigger port, retrying while nobody listens (a failover)."""
    while True:
        try:
            async with aiocoord.TriggerClient("127.0.0.1", port) as trigger:
                return await trigger.send("ADD", data)
        except OSError:
            await anyio.sleep(0.05)


async def _applied_everywhere(files: list[Path], data: str) -> None:
    async def done() -> bool:
        return all(f.exists() and f.read_text() == data for f in files)

    await _until(done)


async def _demo(d: Demo, tg: anyio.abc.TaskGroup) -> None:
    svc = d.services
    trigger_port = free_port()
    async with d.step("connect to ZooKeeper") as s, Client(d.hosts, session_timeout=8) as root:
        if await root.exists(NAMESPACE):
            await root.delete(NAMESPACE, recursive=True)
        s.detail = f"session 0x{root.session_id:x} on {root.connected_host}"
    async with Client(d.hosts, namespace=NAMESPACE, session_timeout=8) as zk:
        election = aiocoord.Election(zk, f"{CONFIG}-agents")
        files = [svc.logs / f"app{i}" / "nginx.conf" for i in range(3)]

        async with d.step("two config agents elect a leader") as s:
            for i in range(2):
                svc.start(f"agent{i}", "agent", "--path", CONFIG, "--id", f"agent{i}",
                          "--listen", f"127.0.0.1:{trigger_port}")  # fmt: skip

            async def two_candidates() -> bool:
                return len(await election.candidates()) == 2

            await _until(two_candidates)
            first = (await election.current_leaders())[0].identity
            version = await _publish(trigger_port, "worker_processes 1;\n")
            s.detail = f"{first} leads and serves the trigger port; {version} published"

        async with d.step("three apps apply the config to their files") as s:
            for i, f in enumerate(files):
                f.parent.mkdir(parents=True, exist_ok=True)
                svc.start(f"app{i}", "app", "--path", CONFIG, "--out", str(f), "--id", f"host{i}")
            await _applied_everywhere(files, "worker_processes 1;\n")
            started = time.perf_counter()
            version = await _publish(trigger_port, "worker_processes 2;\n")
            await _applied_everywhere(files, "worker_processes 2;\n")
            took = (time.perf_counter() - started) * 1000
            s.detail = f"{version}: trigger to all 3 files in {took:.0f} ms"

        async with d.step("three services register with health checks; one fails it") as s:
            rendered = svc.logs / "render" / "upstream.conf"
            rendered.parent.mkdir()
            (rendered.parent / "upstream.conf.j2").write_text(UPSTREAM)
            (rendered.parent / "render.toml").write_text(RENDER)
            svc.start("render", "render", str(rendered.parent / "render.toml"), "--id", "host0")

            async def upstream_has(n: int) -> bool:
                text = rendered.read_text() if rendered.exists() else ""
                return text.count("server ") == n

            checks = [anyio.CancelScope() for _ in range(3)]
            ports = []
            for i, scope in enumerate(checks):
                port = await tg.start(_health_endpoint, scope)
                ports.append(port)
                svc.start(f"api{i}", "register", "--service", "api", "--address", "127.0.0.1",
                          "--port", str(port), "--id", f"api{i}", "--check",
                          f"tcp://127.0.0.1:{port}", "--interval", "0.3", "--fall", "2",
                          "--rise", "1")  # fmt: skip
            registry = aiocoord.ServiceRegistry(zk)
            async with registry.discovery("api") as cache:

                async def seen(n: int) -> bool:
                    return len(cache.instances()) == n

                await _until(lambda: seen(3))
                await _until(lambda: upstream_has(3))
                pick = cache.pick("round_robin")
                checks[2].cancel()  # api2's health check starts failing
                started = time.perf_counter()
                await _until(lambda: seen(2))
                took = time.perf_counter() - started
                await _until(lambda: upstream_has(2))
                if f":{ports[2]};" in rendered.read_text():
                    raise RuntimeError(f"api2 is still in the rendered upstream {rendered}")
                rendered_after = time.perf_counter() - started
            s.detail = (f"3 discovered (picked {pick.id}); api2 down -> dropped after {took:.1f}s,"
                        f" from the rendered upstream after {rendered_after:.1f}s; "
                        f"{', '.join(sorted(i.id for i in await registry.instances('api')))} "
                        "remain")  # fmt: skip

        async with d.step("a dispatcher and three workers complete 200 tasks", limit=40) as s:
            svc.start("dispatcher", "dispatcher", "--id", "dispatcher")
            for i in range(3):
                svc.start(f"worker{i}", "worker", "--id", f"worker{i}", "--concurrency", "8",
                          "--handler", f"{__name__}:tagged")  # fmt: skip
            queue = aiocoord.TaskQueue(zk)
            started = time.perf_counter()
            handles = [await queue.submit(f"task {i}".encode()) for i in range(200)]
            by: Counter[str] = Counter()
            for n, handle in enumerate(handles, 1):
                by[(await handle.result()).rsplit(b" by ", 1)[1].decode()] += 1
                if n % 50 == 0:
                    print(f"    ... {n}/200 done", flush=True)
            took = time.perf_counter() - started
            s.detail = f"200 done in {took:.1f}s (with start-up); " + ", ".join(
                f"{w} {n}" for w, n in sorted(by.items())
            )

        async with d.step("kill -9 the agent leader; the standby takes the trigger port") as s:
            svc.kill(first)
            started = time.perf_counter()
            version = await _publish(trigger_port, "worker_processes 3;\n")
            await _applied_everywhere(files, "worker_processes 3;\n")
            took = time.perf_counter() - started
            now = (await election.current_leaders())[0].identity
            if now == first:
                raise RuntimeError("the killed agent still leads")
            s.detail = (f"{now} took over after {took:.1f}s (session timeout {SESSION_TIMEOUT}s);"
                        f" {version} applied by 3 apps")  # fmt: skip

        if d.ensemble is not None:
            async with d.step("kill a ZooKeeper member: no application-level failover") as s:
                before = await _roles(zk, election)
                victim, connections = await _busiest_follower(d.ensemble)
                d.ensemble.members[victim].kill()
                version = await _publish(trigger_port, "worker_processes 4;\n")
                await _applied_everywhere(files, "worker_processes 4;\n")
                more = [await queue.submit(b"after") for _ in range(20)]
                for handle in more:
                    await handle.result()
                after = await _roles(zk, election)
                if after != before:
                    raise RuntimeError(f"roles changed: {before} -> {after}")
                s.detail = (f"member {victim + 1} (a follower with {connections} sessions) "
                            "killed; agent leader, dispatcher and instances unchanged; "
                            f"{version} applied, 20 more tasks done")  # fmt: skip


async def _busiest_follower(ensemble: ZooKeeperEnsemble) -> tuple[int, int]:
    """The follower serving the most sessions, and how many."""
    best = (0, -1)
    for i, member in enumerate(ensemble.members):
        host, port = member.address.rsplit(":", 1)
        info = await four_letter(host, int(port))
        if info.get("Mode") == "follower" and int(info.get("Connections", 0)) > best[1]:
            best = (i, int(info.get("Connections", 0)))
    return best


async def _roles(zk: Client, election: aiocoord.Election) -> tuple[object, ...]:
    leaders = [c.path for c in await election.current_leaders()]
    master = await zk.get("/rpc/master")
    instances = sorted(i.id for i in await aiocoord.ServiceRegistry(zk).instances("api"))
    return (leaders, master[1].czxid, instances)


async def _health_endpoint(
    scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[int]
) -> None:
    """A TCP port that accepts (and hangs up) until ``scope`` is cancelled, then refuses."""

    async def hang_up(stream: anyio.abc.SocketStream) -> None:
        await stream.aclose()

    with scope:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(hang_up)


def _summary(d: Demo) -> None:
    width = max((len(s.name) for s in d.steps), default=4)
    print()
    print(f"{'step':<{width}}  {'result':<6}  {'time':>7}")
    print(f"{'-' * width}  ------  -------")
    for s in d.steps:
        print(f"{s.name:<{width}}  {'ok' if s.ok else 'FAILED':<6}  {s.seconds:>6.2f}s")


def _consecutive_free_ports(count: int) -> int:
    """The first of ``count`` free consecutive ports, as ``aiocoord zk start --ensemble`` uses."""
    while True:
        first = free_port()
        if first + count <= 65536 and not any(port_in_use(first + i) for i in range(count)):
            return first


def _log_to_file(path: Path, level: str) -> None:
    """The demo's own records go to ``path``; only errors reach the terminal, whose lines are
    the demo's output (a session's WARNING when a member dies would break into it)."""
    to_file = logging.FileHandler(path)
    to_file.setFormatter(TextFormatter())
    to_terminal = logging.StreamHandler()
    to_terminal.setFormatter(TextFormatter())
    to_terminal.setLevel(logging.ERROR)
    logging.basicConfig(level=getattr(logging, level), handlers=[to_file, to_terminal], force=True)


def _start_ensemble(step: Step) -> ZooKeeperEnsemble | None:
    print(f"--> {step.name}", flush=True)
    started = time.perf_counter()
    port = _consecutive_free_ports(3)
    show("zk", "start", "--ensemble", "3", "--port", str(port))
    ensemble = ZooKeeperEnsemble(3, client_ports=[port, port + 1, port + 2])
    try:
        ensemble.start()
    except ZooKeeperNotFound as exc:
        print(f"    FAILED: {exc}", flush=True)
        return None
    step.ok = True
    step.seconds = time.perf_counter() - started
    step.detail = ensemble.hosts
    print(f"    ok in {step.seconds:.2f}s  {step.detail}", flush=True)
    return ensemble


def run_demo(args: argparse.Namespace) -> int:
    ensemble: ZooKeeperEnsemble | None = None
    started = time.perf_counter()
    logs = Path(tempfile.mkdtemp(prefix="aiocoord-demo-"))
    _log_to_file(logs / "demo.log", log_level(args))
    first_steps: list[Step] = []
    if args.zk is None:
        first_steps.append(Step("start a 3-member ZooKeeper ensemble"))
        ensemble = _start_ensemble(first_steps[0])
        if ensemble is None:
            return 2
    hosts = args.zk or (ensemble.hosts if ensemble else "")
    demo = Demo(hosts, ensemble, Services(hosts, logs), first_steps)
    failed: str | None = None
    try:
        result = aiocoord.run(_run_guarded, demo)
        failed = "interrupted" if result is None else result or None
    finally:
        demo.services.stop_all()
        if ensemble is not None:
            ensemble.close()
    _summary(demo)
    if failed:
        print(f"\ndemo FAILED at: {failed} (service logs in {logs})")
        return 1
    if not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        print(f"\nservice logs in {logs}")
    print(f"\ndemo finished in {time.perf_counter() - started:.1f}s")
    return 0


async def _run_guarded(d: Demo) -> str:
    """'' on success, else the name of the step that failed."""
    try:
        async with anyio.create_task_group() as tg:
            await _demo(d, tg)
            tg.cancel_scope.cancel()
    except Exception as exc:
        name = next((s.name for s in d.steps if not s.ok), "setup")
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # the task group's wrapping says nothing
        log.error("step %r failed: %s: %s", name, type(exc).__name__, exc)
        return name
    return ""
