"""The services' metrics port against real service processes: the exposition parses with
prometheus-client's own parser (process, Python and build metrics included), ``HEAD /metrics``,
``/healthz`` following the ZooKeeper session (a private server paused and resumed), and
``/readyz`` by each service's own measure (elect and app)."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiocoord import Client, ConfigStore
from aiocoord.testing import ZooKeeperServer, free_port
from tests.helpers import eventually
from tests.services.test_tasks_services import service, zk_args


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """(status, body) of one request to 127.0.0.1:port; (0, error) when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        reply = connection.getresponse()
        return reply.status, reply.read().decode()
    except OSError as exc:
        return 0, str(exc)
    finally:
        connection.close()


def head(port: int, path: str) -> bytes:
    """The raw reply to ``HEAD path`` (http.client would skip a body sent by mistake)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def answers(port: int, path: str, status: int, says: str = "") -> bool:
    got, body = get(port, path)
    return got == status and says in body


async def test_exposition_head_healthz_and_readyz_of_elect_through_a_paused_server(
    zk_private_server: ZooKeeperServer, tmp_path: Path
) -> None:
    leader_port, standby_port = free_port(), free_port()
    common = ["--zk", zk_private_server.hosts, "--session-timeout", "3", "--path", "/ha"]
    async with (
        service(tmp_path / "leader.log", "elect", *common, "--id", "one",
                "--metrics-port", str(leader_port), "--", "sleep", "600"),
    ):  # fmt: skip
        await eventually(lambda: answers(leader_port, "/readyz", 200, "leading /ha"), timeout=30)
        async with service(tmp_path / "standby.log", "elect", *common, "--id", "two",
                           "--metrics-port", str(standby_port), "--", "sleep", "600"):  # fmt: skip
            await eventually(
                lambda: answers(standby_port, "/readyz", 200, "standing by at /ha"), timeout=30
            )
        assert answers(leader_port, "/healthz", 200, "session connected")

        status, text = await anyio.to_thread.run_sync(get, leader_port, "/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("aiocoord_leader", "aiocoord_leadership_changes", "aiocoord_up",
                     "aiocoord_session_connected", "aiocoord_session_transitions",
                     "aiocoord_build_info", "process_cpu_seconds", "process_start_time_seconds",
                     "python_info"):  # fmt: skip
            assert name in families, sorted(families)
        (build,) = families["aiocoord_build_info"].samples
        assert build.labels["version"] and build.value == 1
        (leader,) = families["aiocoord_leader"].samples
        assert leader.labels == {"path": "/ha"} and leader.value == 1
        assert "e+" not in next(
            line for line in text.splitlines() if line.startswith("process_start_time_seconds ")
        )
        reply = await anyio.to_thread.run_sync(head, leader_port, "/metrics")
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\n")
        assert get(leader_port, "/metrics", "POST")[0] == 405
        assert get(leader_port, "/nope")[0] == 404

        zk_private_server.pause()  # SIGSTOP: the connection goes quiet, the session is away
        try:
            await eventually(lambda: answers(leader_port, "/healthz", 503), timeout=30)
            assert answers(leader_port, "/readyz", 503)
        finally:
            zk_private_server.resume()
        await eventually(lambda: answers(leader_port, "/healthz", 200), timeout=30)


@pytest.mark.parametrize("check", ["grep -q good {file}"])
async def test_app_is_ready_once_a_version_is_in_place(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path, check: str
) -> None:
    port = free_port()
    out = tmp_path / "site.conf"
    args = [*zk_args(zk_server, zk), "--path", "/conf", "--out", str(out), "--id", "web-1",
            "--check-cmd", check, "--metrics-port", str(port)]  # fmt: skip
    store = ConfigStore(zk, "/conf")
    async with service(tmp_path / "app.log", "app", *args):
        await eventually(lambda: answers(port, "/readyz", 503, "no version applied yet"), 30)
        assert answers(port, "/healthz", 200)
        await store.publish(b"bad")  # fails its check: still nothing in place
        await anyio.sleep(1)
        assert answers(port, "/readyz", 503, "no version applied yet")
        good = await store.publish(b"good")
        await eventually(lambda: answers(port, "/readyz", 200, f"{good} in place"), 30)
        await store.publish(b"bad again")  # the good one stays in place: still ready
        await eventually(lambda: answers(port, "/readyz", 200, "a newer one failed"), 30)


async def test_elect_is_not_ready_while_it_waits_to_contend_again(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """CMD exited: elect resigned and waits (1 s, doubling) before it is a candidate again."""
    port = free_port()
    args = [*zk_args(zk_server, zk), "--path", "/flaky", "--metrics-port", str(port),
            "--max-backoff", "10", "--", "false"]  # fmt: skip
    async with service(tmp_path / "elect.log", "elect", *args):
        await eventually(lambda: answers(port, "/readyz", 503, "not a candidate at /flaky"), 30)
        assert answers(port, "/healthz", 200)
