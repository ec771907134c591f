"""pytest fixtures over real ZooKeeper, for aiocoord's tests and for users' own.

Installed as a ``pytest11`` entry point: with aiocoord installed, the fixtures are available in
every test run. They are opt-in: a run whose tests use none of them starts no ZooKeeper and
changes nothing (no warnings filters, no event loop policy, no hooks of pytest-asyncio).

- ``zk_server``: one standalone server for the whole test session (do not kill it). With
  ``AIOCOORD_TEST_ZK=host:port`` in the environment it is that existing server instead
  (an ``ExistingServer``; nothing is started, and its data is left as it is).
- ``zk_ensemble``: a 3-member ensemble, started on first use; members a test killed or paused are
  brought back after it.
- ``zk_private_server``: a server of the test's own, for faults that break it (kill, pause);
  always started, ``AIOCOORD_TEST_ZK`` or not.
- ``namespace``: a unique chroot per test (``/aiocoord-test/<test>-<random>``).
- ``zk``: a connected ``Client`` in the test's namespace on ``zk_server``.

With the ini option ``aiocoord_uvloop = true`` tests run on uvloop, and those marked
``@pytest.mark.both_loops`` on stdlib asyncio as well (aiocoord's own suite does this).

Loading it by hand (``-p aiocoord.testing.pytest_plugin``, as before the entry point) still works:
the entry point carries the module's name, so pytest registers it once.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass

import pytest

from ..transport.client import Client
from .zookeeper import ZooKeeperEnsemble, ZooKeeperServer

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - the zk fixture needs pytest-asyncio; the others do not
    async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = [
    "ExistingServer",
    "namespace",
    "zk",
    "zk_ensemble",
    "zk_private_server",
    "zk_server",
]

#: the session timeout the ``zk`` fixture asks for: short, so expiry tests stay quick
TEST_SESSION_TIMEOUT = 4.0

#: ``host:port[,host:port...]`` of an existing ZooKeeper for ``zk_server`` (and so ``zk``)
EXISTING_SERVER_ENV = "AIOCOORD_TEST_ZK"


@dataclass(frozen=True, slots=True)
class ExistingServer:
    """A ZooKeeper the fixtures were pointed at (``AIOCOORD_TEST_ZK``): used, never managed."""

    hosts: str


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "aiocoord_uvloop",
        "run tests on uvloop (and those marked both_loops on stdlib asyncio too)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run the test under the stdlib asyncio loop as well as uvloop"
    )
    if config.getini("aiocoord_uvloop"):
        config.pluginmanager.register(_UvloopFactories(), "aiocoord-uvloop")


class _UvloopFactories:
    """pytest-asyncio's loop factories: uvloop, plus stdlib asyncio for ``both_loops`` tests."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_asyncio_loop_factories(
        self, config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
        if uvloop is not None:
            factories["uvloop"] = uvloop.new_event_loop
        if uvloop is None or item.get_closest_marker("both_loops") is not None:
            factories["asyncio"] = asyncio.new_event_loop
        return factories


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperServer | ExistingServer]:
    existing = os.environ.get(EXISTING_SERVER_ENV, "").strip()
    if existing:
        yield ExistingServer(existing)
        return
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


@async_fixture
async def zk(zk_server: ZooKeeperServer | ExistingServer, namespace: str) -> AsyncIterator[Client]:
    async with Client(
        zk_server.hosts, namespace=namespace, session_timeout=TEST_SESSION_TIMEOUT
    ) as client:
        yield client
