"""A service started while ZooKeeper is unreachable waits for it (a warning per failed round)
and comes up once it answers, instead of exiting: found by the fault campaign (seed 3), where an
agent restarted during a member failover exited with "could not connect" and stayed down. An
explicit --connect-timeout still gives up, with one line and exit 1."""

from __future__ import annotations

from pathlib import Path

import anyio

from aiocoord import Client
from aiocoord.testing import TcpProxy, ZooKeeperServer
from tests.helpers import eventually, eventually_async

from .processes import service


async def test_a_service_started_while_zookeeper_is_unreachable_waits_for_it(
    zk_server: ZooKeeperServer, namespace: str, zk: Client, tmp_path: Path
) -> None:
    log = tmp_path / "register.log"
    with TcpProxy.to(zk_server.hosts) as proxy:
        proxy.refuse()
        async with service(
            "register", "--zk", f"{proxy.address}{namespace}", "--session-timeout", "2",
            "--service", "api", "--address", "127.0.0.1", "--port", "80", "--id", "i1",
            log=log,
        ) as proc:  # fmt: skip
            with anyio.fail_after(60):
                await eventually(
                    lambda: log.exists() and "waiting for ZooKeeper" in log.read_text(), timeout=30
                )
                assert proc.returncode is None  # still there, waiting
                proxy.accept()
                await eventually_async(lambda: _exists(zk, "/services/api/i1"), timeout=30)
            assert proc.returncode is None


async def _exists(zk: Client, path: str) -> bool:
    return await zk.exists(path) is not None
