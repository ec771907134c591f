"""pytest fixtures over real ZooKeeper: load with ``-p aiocoord.testing.pytest_plugin``.

- ``zk_server``: one standalone server for the whole test session (do not kill it).
- ``zk_ensemble``: a 3-member ensemble, started on first use; members a test killed or paused are
  brought back after it.
- ``zk_private_server``: a server of the test's own, for faults that break it (kill, pause).
- ``namespace``: a unique chroot per test (``/aiocoord-test/<test>-<random>``).
- ``zk``: a connected ``Client`` in the test's namespace on ``zk_server``.

Tests run on uvloop; mark one ``@pytest.mark.both_loops`` to run it on stdlib asyncio as well.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest

from ..transport.client import Client
from .zookeeper import ZooKeeperEnsemble, ZooKeeperServer

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

__all__ = [
    "namespace",
    "zk",
    "zk_ensemble",
    "zk_private_server",
    "zk_server",
]

#: the session timeout the ``zk`` fixture asks for: short, so expiry tests stay quick
TEST_SESSION_TIMEOUT = 4.0


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    if uvloop is None or item.get_closest_marker("both_loops") is not None:
        factories["asyncio"] = asyncio.new_event_loop
    return factories


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def _ensemble() -> Iterator[ZooKeeperEnsemble]:
    ensemble = ZooKeeperEnsemble(3)
    ensemble.start()
    yield ensemble
    ensemble.close()


@pytest.fixture
def zk_ensemble(_ensemble: ZooKeeperEnsemble) -> Iterator[ZooKeeperEnsemble]:
    yield _ensemble
    restarted = False
    for member in _ensemble.members:
        if member.paused:
            member.resume()
        if not member.running:
            member.start()
            restarted = True
    if restarted:
        _ensemble.wait_serving()


@pytest.fixture
def zk_private_server() -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return f"/aiocoord-test/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def zk(zk_server: ZooKeeperServer, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        zk_server.hosts, namespace=namespace, session_timeout=TEST_SESSION_TIMEOUT
    ) as client:
        yield client
