"""A one-shot watch set while a persistent watch on the same path is being added relies on it
(no server watch is asked for). If the add_watch caller gives up while the AddWatch is still
queued, the AddWatch is never sent, and the one-shot watch must still fire."""

from __future__ import annotations

import asyncio

from aiocoord import Client, SessionState
from aiocoord.testing import TcpProxy
from tests.helpers import Recorder, wait_state


async def test_one_shot_watch_fires_when_covering_add_watch_was_given_up(
    proxy: TcpProxy, namespace: str
) -> None:
    async with (
        Client(proxy.address, namespace=namespace, session_timeout=10, reconnect_delay=0) as zk,
        zk.session_events() as feed,
    ):
        await zk.create("/n", b"a")
        proxy.refuse()
        proxy.cut()
        await wait_state(feed, SessionState.SUSPENDED, 5)

        persistent, one_shot = Recorder(), Recorder()
        adding = asyncio.ensure_future(zk.add_watch("/n", persistent))
        await asyncio.sleep(0)  # the AddWatch is queued
        getting = asyncio.ensure_future(zk.get("/n", watch=one_shot))
        await asyncio.sleep(0)
        adding.cancel()  # the caller gives up while the AddWatch waits for the reconnect
        proxy.accept()
        await wait_state(feed, SessionState.RECONNECTED, 10)
        assert (await asyncio.wait_for(getting, 5))[0] == b"a"

        await zk.set("/n", b"b")
        events = await one_shot.wait(1, timeout=5)  # fails: no server watch was ever set
        assert events[0].path == "/n"
