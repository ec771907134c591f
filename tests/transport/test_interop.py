"""Interop with independent clients on the same server: kazoo (threads) and aiozk (asyncio).
Nodes and watches written by either are seen by aiocoord, and the reverse."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import anyio
import pytest
from aiozk import WatchEvent as AiozkEvent
from aiozk import ZKClient
from kazoo.client import KazooClient

from aiocoord import Client, EventType
from aiocoord.testing import ZooKeeperServer
from tests.helpers import Recorder


@pytest.fixture
def kazoo(zk_server: ZooKeeperServer, namespace: str) -> Iterator[KazooClient]:
    client = KazooClient(hosts=zk_server.hosts + namespace, timeout=10)
    client.start(timeout=15)
    client.ensure_path("/")
    yield client
    client.stop()
    client.close()


async def test_kazoo_nodes_and_watches_interoperate(zk: Client, kazoo: KazooClient) -> None:
    await anyio.to_thread.run_sync(
        lambda: kazoo.create("/from-kazoo", b"k", ephemeral=True, sequence=True)
    )
    (name,) = await zk.children("/")
    assert name.startswith("from-kazoo") and len(name) == len("from-kazoo") + 10
    data, stat = await zk.get("/" + name)
    assert data == b"k" and stat.ephemeral_owner == kazoo.client_id[0]

    # a kazoo watch fires for an aiocoord write
    fired = threading.Event()
    await zk.create("/shared", b"1")
    await anyio.to_thread.run_sync(lambda: kazoo.get("/shared", watch=lambda e: fired.set()))
    await zk.set("/shared", b"2")
    assert await anyio.to_thread.run_sync(fired.wait, 5)
    assert (await anyio.to_thread.run_sync(kazoo.get, "/shared"))[0] == b"2"

    # an aiocoord watch fires for a kazoo write
    recorder = Recorder()
    await zk.children("/", watch=recorder)
    await anyio.to_thread.run_sync(lambda: kazoo.create("/by-kazoo", b""))
    (event,) = await recorder.wait()
    assert event.type is EventType.NODE_CHILDREN_CHANGED and event.path == "/"


async def test_aiozk_nodes_and_watches_interoperate(zk: Client, zk_server: ZooKeeperServer) -> None:
    other = ZKClient(zk_server.hosts, chroot=zk.namespace, session_timeout=10)
    with anyio.fail_after(15):
        await other.start()
    try:
        with anyio.fail_after(10):
            await other.create("/from-aiozk", b"z")
            assert (await zk.get("/from-aiozk"))[0] == b"z"
            await zk.create("/from-aiocoord", b"a")
            assert await other.get_data("/from-aiocoord") == b"a"
            # an aiozk watch fires for an aiocoord write
            changed = other.wait_for_events([AiozkEvent.DATA_CHANGED], "/from-aiocoord")
            await other.get_data("/from-aiocoord", watch=True)
            await zk.set("/from-aiocoord", b"b")
            await changed
            # and the reverse
            recorder = Recorder()
            await zk.get("/from-aiozk", watch=recorder)
            await other.set_data("/from-aiozk", b"zz")
            (event,) = await recorder.wait()
            assert event.type is EventType.NODE_DATA_CHANGED
    finally:
        with anyio.fail_after(10):
            await other.close()
