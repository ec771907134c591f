"""Protected sequential creates through real lost replies: the request reaches the server and is
applied, its reply is held back by the proxy and the connection cut (ConnectionLoss), and the
client finds its node by the ``_c_<uuid>-`` marker instead of creating a second one. A control
shows why: a plain sequential create sent again after ConnectionLoss leaves two nodes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import pytest

from aiocoord import Client, ConnectionLoss
from aiocoord.testing import TcpProxy, ZooKeeperServer
from tests.helpers import count_is, eventually, eventually_async, gone, holds_async

T = TypeVar("T")

_PROTECTED = re.compile(r"^_c_[0-9a-f-]{36}-item-\d{10}$")


@dataclass
class Outcome(Generic[T]):
    value: T | None = None
    error: BaseException | None = None


async def lose_reply(
    proxy: TcpProxy, write: Callable[[], Awaitable[T]], applied: Callable[[], Awaitable[bool]]
) -> Outcome[T]:
    """Run ``write`` with its reply lost: replies held back, wait until the server applied it
    (``applied`` asks through another session), cut, forward again. Returns how ``write`` ended
    (after whatever recovery it does)."""
    outcome: Outcome[T] = Outcome()

    async def run() -> None:
        try:
            outcome.value = await write()
        except Exception as exc:  # the test looks at it
            outcome.error = exc

    with anyio.fail_after(30):
        proxy.stall_replies()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await eventually_async(applied, timeout=10)
            proxy.cut()
            proxy.resume()
    return outcome


async def lose_request(proxy: TcpProxy, write: Callable[[], Awaitable[T]]) -> Outcome[T]:
    """Run ``write`` with its request lost: both directions held back, wait until the request
    reached the proxy (never the server), cut, forward again."""
    outcome: Outcome[T] = Outcome()

    async def run() -> None:
        try:
            outcome.value = await write()
        except Exception as exc:
            outcome.error = exc

    with anyio.fail_after(30):
        proxy.stall()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await eventually(lambda: proxy.held_requests > 0, timeout=10)
            proxy.cut()
            proxy.resume()
    return outcome


@asynccontextmanager
async def through_proxy(
    zk_server: ZooKeeperServer, namespace: str
) -> AsyncIterator[tuple[TcpProxy, Client]]:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(proxy.address, namespace=namespace, session_timeout=20) as client:
            yield proxy, client


async def test_protected_create_with_a_lost_reply_returns_the_one_node(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create("/q")
    async with through_proxy(zk_server, namespace) as (proxy, client):
        session = client.session_id
        outcome = await lose_reply(
            proxy,
            lambda: client.create("/q/item-", b"x", sequential=True, protected=True, makepath=True),
            count_is(zk, "/q", 1),
        )
        assert client.session_id == session  # the same session: only the reply was lost
    assert outcome.error is None and outcome.value is not None
    children = await zk.children("/q")
    assert len(children) == 1
    assert _PROTECTED.match(children[0]), children
    assert outcome.value == f"/q/{children[0]}"
    assert (await zk.get(outcome.value))[0] == b"x"


async def test_plain_sequential_create_retried_after_a_lost_reply_makes_two_nodes(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """The control: why protection is needed. The first create was applied, the caller only
    heard ConnectionLoss, and sending it again makes a second node."""
    await zk.create("/q")
    async with through_proxy(zk_server, namespace) as (proxy, client):
        outcome = await lose_reply(
            proxy,
            lambda: client.create("/q/item-", b"x", sequential=True),
            count_is(zk, "/q", 1),
        )
        assert isinstance(outcome.error, ConnectionLoss)
        with anyio.fail_after(10):
            await client.create("/q/item-", b"x", sequential=True)  # the caller's retry
    assert sorted(await zk.children("/q")) == ["item-0000000000", "item-0000000001"]


async def test_protected_create_whose_request_was_lost_creates_one_node(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create("/q")
    async with through_proxy(zk_server, namespace) as (proxy, client):
        outcome = await lose_request(
            proxy,
            lambda: client.create("/q/item-", b"x", sequential=True, protected=True, makepath=True),
        )
    assert outcome.error is None
    children = await zk.children("/q")
    assert len(children) == 1
    assert _PROTECTED.match(children[0]), children
    assert outcome.value == f"/q/{children[0]}"


async def test_plain_create_whose_request_was_lost_fails_with_connection_loss(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """The not-applied control: the request really was in flight (ConnectionLoss), and nothing
    reached the server."""
    await zk.create("/q")
    async with through_proxy(zk_server, namespace) as (proxy, client):
        outcome = await lose_request(proxy, lambda: client.create("/q/item-", sequential=True))
    assert isinstance(outcome.error, ConnectionLoss)
    assert await zk.children("/q") == []


@pytest.mark.parametrize("direction", ["replies", "both"])
async def test_proxy_stalls_only_what_it_is_told(
    zk_server: ZooKeeperServer, namespace: str, zk: Client, direction: str
) -> None:
    """stall_replies(): the write reaches the server, the reply does not come; stall(): neither.
    resume() lets the held bytes through."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        if direction == "replies":
            proxy.stall_replies()
        else:
            proxy.stall()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.create, "/n", b"x")
                if direction == "replies":
                    await eventually_async(lambda: _exists(zk, "/n"), timeout=5)
                    await eventually(lambda: proxy.held_replies > 0, timeout=5)
                    assert proxy.held_requests == 0
                else:
                    await eventually(lambda: proxy.held_requests > 0, timeout=5)
                    await holds_async(gone(zk, "/n"))  # the held create: not applied
                proxy.resume()
        assert proxy.held_requests == proxy.held_replies == 0
        assert await zk.exists("/n") is not None


async def _exists(zk: Client, path: str) -> bool:
    return await zk.exists(path) is not None
