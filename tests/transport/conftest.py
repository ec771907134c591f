"""Fixtures of the transport tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiocoord.testing import TcpProxy, ZooKeeperServer


@pytest.fixture
def proxy(zk_server: ZooKeeperServer) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the session's server: cut, stall or refuse the client's link."""
    with TcpProxy.to(zk_server.hosts) as p:
        yield p
