"""``aiocoord status`` and the services' Prometheus endpoints, against a real ZooKeeper and real
service processes."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aiocoord import Client, Election, TaskQueue, TriggerClient, TriggerError
from aiocoord.testing import ZooKeeperServer, free_port
from tests.helpers import eventually, eventually_async
from tests.services.test_tasks_services import service, zk_args


def scrape(port: int) -> dict[str, float]:
    """``name{labels}`` -> value from a /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_and_status_of_a_running_system(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    logs = tmp_path
    trigger, m_agent, m_worker, m_dispatcher, m_app = (free_port() for _ in range(5))
    out = logs / "site.conf"
    async with AsyncExitStack() as stack:
        for name, args in (
            ("agent", ["agent", "--path", "/conf", "--listen", f"127.0.0.1:{trigger}",
                       "--identity", "agent-a", "--metrics-port", str(m_agent)]),
            ("worker", ["worker", "--id", "w1", "--metrics-port", str(m_worker)]),
            ("dispatcher", ["dispatcher", "--identity", "disp", "--metrics-port",
                            str(m_dispatcher)]),
            ("app", ["app", "--path", "/conf", "--out", str(out), "--id", "host-1",
                     "--check-cmd", "grep -q v1 {file}", "--metrics-port", str(m_app)]),
        ):  # fmt: skip
            await stack.enter_async_context(
                service(logs / f"{name}.log", args[0], *zk_args(zk_server, zk), *args[1:])
            )

        async def agent_leads() -> bool:
            return bool(await Election(zk, "/conf-agents").current_leaders())

        await eventually_async(agent_leads, timeout=20)
        queue = TaskQueue(zk)
        with anyio.fail_after(20):
            for _ in range(3):
                assert await (await queue.submit(b"x")).result() == b"x"
            while True:
                try:
                    async with TriggerClient("127.0.0.1", trigger) as client:
                        await client.send("ADD", "v1")
                        with pytest.raises(TriggerError):
                            await client.send("NOPE", "v1")
                    break
                except OSError:
                    await anyio.sleep(0.1)

        await eventually(out.exists, timeout=20)
        app = await anyio.to_thread.run_sync(scrape, m_app)
        assert app["aiocoord_config_applied_total"] == 1
        assert app.get("aiocoord_config_apply_failures_total", 0) == 0
        worker = await anyio.to_thread.run_sync(scrape, m_worker)
        assert worker['aiocoord_worker_tasks_total{outcome="completed"}'] == 3
        assert worker["aiocoord_task_seconds_count"] == 3
        assert worker["aiocoord_session_connected"] == 1
        assert worker['aiocoord_session_transitions_total{state="connected"}'] == 1
        dispatcher = await anyio.to_thread.run_sync(scrape, m_dispatcher)
        assert dispatcher['aiocoord_dispatcher_actions_total{action="assigned"}'] == 3
        assert dispatcher["aiocoord_dispatcher_active"] == 1
        assert dispatcher['aiocoord_dispatcher_tasks{state="finished"}'] == 3
        assert dispatcher['aiocoord_dispatcher_tasks{state="pending"}'] == 0
        agent = await anyio.to_thread.run_sync(scrape, m_agent)
        assert agent['aiocoord_trigger_requests_total{outcome="ok"}'] == 1
        assert agent['aiocoord_trigger_requests_total{outcome="unknown_command"}'] == 1
        assert agent['aiocoord_leader{path="/conf-agents"}'] == 1

        def status(*extra: str) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "services", "status", *zk_args(zk_server, zk), *extra]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

        report = await anyio.to_thread.run_sync(lambda: status("--json"))
        assert report.returncode == 0, report.stderr
        data = json.loads(report.stdout)
        assert data["ensemble"][0]["ok"] and data["ensemble"][0]["mode"] == "standalone"
        assert data["elections"] == [{"path": "/conf-agents", "leader": "agent-a", "candidates": 1}]
        assert data["config"][0]["path"] == "/conf"
        assert data["config"][0]["current"] == "conf-0000000000"
        assert data["config"][0]["hosts"] == [
            {"host": "host-1", "version": "conf-0000000000", "ok": True, "error": None}
        ]
        assert data["tasks"]["counts"]["done"] == 3 and data["tasks"]["workers"] == 1
        assert data["tasks"]["dispatcher"] == "disp"
        screen = await anyio.to_thread.run_sync(status)
        assert "leader agent-a" in screen.stdout and "done 3" in screen.stdout


async def test_metrics_of_register_discover_and_elect(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    m_register, m_discover, m_elect = (free_port() for _ in range(3))
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as health,
        anyio.create_task_group() as tg,
    ):
        port = health.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(health.serve, _hang_up)
        async with AsyncExitStack() as stack:
            for name, args in (
                ("register", ["register", "--service", "api", "--address", "127.0.0.1",
                              "--port", str(port), "--check", f"tcp://127.0.0.1:{port}",
                              "--interval", "0.2", "--rise", "1",
                              "--metrics-port", str(m_register)]),
                ("discover", ["discover", "--service", "api", "--watch",
                              "--metrics-port", str(m_discover)]),
                ("elect", ["elect", "--path", "/ha", "--metrics-port", str(m_elect), "--",
                           "sleep", "60"]),
            ):  # fmt: skip
                await stack.enter_async_context(
                    service(tmp_path / f"{name}.log", args[0], *zk_args(zk_server, zk), *args[1:])
                )

            def scraped(port: int, name: str, value: float) -> bool:
                try:
                    return scrape(port).get(name) == value
                except OSError:
                    return False  # not serving yet

            await eventually(
                lambda: scraped(m_register, 'aiocoord_registered{service="api"}', 1), timeout=20
            )
            assert scrape(m_register)['aiocoord_registrations_total{service="api"}'] == 1
            await eventually(
                lambda: scraped(m_discover, 'aiocoord_instances{service="api"}', 1), timeout=20
            )
            await eventually(lambda: scraped(m_elect, 'aiocoord_leader{path="/ha"}', 1), timeout=20)
            elect = scrape(m_elect)
            assert elect['aiocoord_leadership_changes_total{change="gained",path="/ha"}'] == 1
        tg.cancel_scope.cancel()


async def _hang_up(stream: anyio.abc.SocketStream) -> None:
    await stream.aclose()
