"""Config publishes and task submits through real lost replies and lost requests: the znode
layouts stay kazoo's (``conf-<10 digits>``, ``task-<10 digits>``), and each call makes exactly one
version or task and returns its name.

Publish: the same multi() (with the publish's idempotency key node) is sent again; submit: an
ephemeral marker created with the task tells whether it was applied (its czxid finds the task).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import pytest

from aiocoord import (
    Client,
    ConfigStore,
    ConnectionLoss,
    Election,
    LeadershipLost,
    TaskQueue,
    Term,
)
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session
from tests.helpers import children, count_is, eventually, eventually_async
from tests.transport.test_protected_create import lose_reply, lose_request, through_proxy

T = TypeVar("T")

PATH = "/Applications/NginxConf"
TASKS = "/rpc/tasks"
MARKERS = "/rpc/submitting"


async def expire_then_cut(
    proxy: TcpProxy, client: Client, zk_server: ZooKeeperServer, *, applied: bool
) -> None:
    """Hold back what is said, expire the session on the server, cut: the client's session is
    LOST with its write's outcome unknown (``applied``: only the replies were held)."""
    if applied:
        proxy.stall_replies()
    else:
        proxy.stall()
    await expire_session(client, host=zk_server.hosts)
    proxy.cut()
    proxy.resume()


# -- ConfigStore.publish -------------------------------------------------------------------
async def test_publish_with_a_lost_reply_makes_one_version(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        store = ConfigStore(client, PATH)
        assert await store.publish(b"v0") == "conf-0000000000"
        session = client.session_id
        outcome = await lose_reply(proxy, lambda: store.publish(b"v1"), count_is(zk, PATH, 2))
        assert client.session_id == session
    assert outcome.error is None
    assert outcome.value == "conf-0000000001"
    assert await children(zk, PATH) == ["conf-0000000000", "conf-0000000001"]
    assert (await zk.get(f"{PATH}/conf-0000000001"))[0] == b"v1"
    assert len(await children(zk, f"{PATH}-keys")) == 2  # one key per publish


async def test_publish_whose_request_was_lost_makes_one_version(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        store = ConfigStore(client, PATH)
        await store.publish(b"v0")
        outcome = await lose_request(proxy, lambda: store.publish(b"v1"))
    assert outcome.error is None
    assert outcome.value == "conf-0000000001"
    assert await children(zk, PATH) == ["conf-0000000000", "conf-0000000001"]


async def test_publish_with_a_key_and_a_lost_reply_returns_the_first_name(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        store = ConfigStore(client, PATH)
        await made_paths(client)
        outcome = await lose_reply(
            proxy, lambda: store.publish(b"v0", key="deploy-7"), count_is(zk, PATH, 1)
        )
        assert outcome.value == "conf-0000000000"
        # labelled after all: a later publish with the key reads its name
        assert await store.publish(b"v0", key="deploy-7") == "conf-0000000000"
    assert await children(zk, PATH) == ["conf-0000000000"]


async def test_publish_with_a_lost_reply_then_a_lost_session_makes_one_version(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """The retry runs on a new session: the key node is persistent, so it still finds the
    version."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        store = ConfigStore(client, PATH)
        await store.publish(b"v0")
        session = client.session_id
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                names: list[str] = []

                async def publish() -> None:
                    names.append(await store.publish(b"v1"))

                proxy.stall_replies()
                tg.start_soon(publish)
                await eventually_async_count(zk, PATH, 2)
                await expire_then_cut(proxy, client, zk_server, applied=True)
        assert client.session_id != session
    assert names == ["conf-0000000001"]
    assert await children(zk, PATH) == ["conf-0000000000", "conf-0000000001"]


async def guarded_term(client: Client, node: str) -> Term:
    """A term held by ``client``'s ephemeral ``node`` (what Election.lead() gives a leader)."""
    await client.create(node, ephemeral=True, makepath=True)
    stat = await client.exists(node)
    assert stat is not None
    return Term(client, node, stat.czxid, stat.version, 0)


async def guarded_store(client: Client) -> tuple[ConfigStore, Term]:
    """The store at PATH with its paths made (a first publish makes them, with replies), and a
    term to publish under."""
    term = await guarded_term(client, "/leader/n-0000000000")
    await made_paths(client)
    return ConfigStore(client, PATH), term


async def made_paths(client: Client) -> None:
    for path in (PATH, f"{PATH}-keys"):
        await client.ensure_path(path)


async def test_guarded_publish_with_a_lost_reply_makes_one_version(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        store, term = await guarded_store(client)
        outcome = await lose_reply(
            proxy, lambda: store.publish(b"v0", term=term), count_is(zk, PATH, 1)
        )
        assert outcome.value == "conf-0000000000"
    assert await children(zk, PATH) == ["conf-0000000000"]


async def test_guarded_publish_applied_before_the_term_was_lost_returns_its_version(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """Applied while the term held, reply lost, then the session (and the term) lost: the retry
    is refused by the fence, but the key shows the first try was applied: its name is
    returned."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        store, term = await guarded_store(client)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                names: list[str] = []

                async def publish() -> None:
                    names.append(await store.publish(b"v0", term=term))

                proxy.stall_replies()
                tg.start_soon(publish)
                await eventually_async_count(zk, PATH, 1)
                await expire_then_cut(proxy, client, zk_server, applied=True)
        with pytest.raises(LeadershipLost):  # the fence holds for anything new
            await store.publish(b"v1", term=term)
    assert names == ["conf-0000000000"]
    assert await children(zk, PATH) == ["conf-0000000000"]


async def test_guarded_publish_not_applied_before_the_term_was_lost_is_fenced(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """Not applied, then the term lost: the retry must not publish (LeadershipLost)."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        store, term = await guarded_store(client)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                errors: list[BaseException] = []

                async def publish() -> None:
                    try:
                        await store.publish(b"v0", term=term)
                    except LeadershipLost as exc:
                        errors.append(exc)

                proxy.stall()
                tg.start_soon(publish)
                await eventually(lambda: proxy.held_requests > 0, timeout=10)
                await expire_then_cut(proxy, client, zk_server, applied=False)
    assert len(errors) == 1
    assert await children(zk, PATH) == []


async def eventually_async_count(zk: Client, path: str, count: int) -> None:
    await eventually_async(count_is(zk, path, count), timeout=10)


@asynccontextmanager
async def replies_late(
    zk_server: ZooKeeperServer, namespace: str
) -> AsyncIterator[tuple[TcpProxy, Client]]:
    """A client whose requests time out after 1s (RequestTimeout) long before its connection
    is given up for silence (2/3 of 20s)."""
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with Client(
            proxy.address, namespace=namespace, session_timeout=20, request_timeout=1
        ) as client:
            yield proxy, client


async def late_reply(
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
    write: Callable[[], Awaitable[T]],
    applied: Callable[[], Awaitable[bool]],
) -> T:
    """Run ``write`` with its reply held back past its deadline (RequestTimeout, the connection
    stays), then let the replies through."""
    results: list[T] = []

    async def run() -> None:
        results.append(await write())

    with anyio.fail_after(30), caplog.at_level(logging.INFO, logger="aiocoord"):
        proxy.stall_replies()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await eventually_async(applied, timeout=10)
            await eventually(lambda: "RequestTimeout" in caplog.text, timeout=10)
            proxy.resume()
    return results[0]


async def test_publish_whose_deadline_ran_out_makes_one_version(
    zk_server: ZooKeeperServer, namespace: str, zk: Client, caplog: pytest.LogCaptureFixture
) -> None:
    async with replies_late(zk_server, namespace) as (proxy, client):
        store = ConfigStore(client, PATH)
        await store.publish(b"v0")
        session = client.session_id
        name = await late_reply(proxy, caplog, lambda: store.publish(b"v1"), count_is(zk, PATH, 2))
        assert client.session_id == session
    assert name == "conf-0000000001"
    assert await children(zk, PATH) == ["conf-0000000000", "conf-0000000001"]


# -- TaskQueue.submit ----------------------------------------------------------------------
async def test_submit_with_a_lost_reply_queues_one_task(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        queue = TaskQueue(client)
        first = await queue.submit(b"t0")
        session = client.session_id
        outcome = await lose_reply(proxy, lambda: queue.submit(b"t1"), count_is(zk, TASKS, 2))
        assert client.session_id == session
        assert outcome.error is None and outcome.value is not None
        assert (first.id, outcome.value.id) == ("task-0000000000", "task-0000000001")
        assert await children(zk, TASKS) == ["task-0000000000", "task-0000000001"]
        assert (await zk.get(outcome.value.path))[0] == b"t1"
        # the markers: the previous one deleted with the task, this one by the next submit
        assert len(await children(zk, MARKERS)) == 1
        await queue.submit(b"t2")
        assert len(await children(zk, MARKERS)) == 1
        assert sum((await TaskQueue(zk).counts()).values()) == 3
    assert await children(zk, MARKERS) == []  # ephemeral: gone with the session


async def test_submit_whose_request_was_lost_queues_one_task(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with through_proxy(zk_server, namespace) as (proxy, client):
        queue = TaskQueue(client)
        await queue.submit(b"t0")
        outcome = await lose_request(proxy, lambda: queue.submit(b"t1"))
        assert outcome.error is None and outcome.value is not None
        assert outcome.value.id == "task-0000000001"
        assert (await zk.get(outcome.value.path))[0] == b"t1"
    assert await children(zk, TASKS) == ["task-0000000000", "task-0000000001"]


async def test_submit_whose_deadline_ran_out_queues_one_task(
    zk_server: ZooKeeperServer, namespace: str, zk: Client, caplog: pytest.LogCaptureFixture
) -> None:
    async with replies_late(zk_server, namespace) as (proxy, client):
        queue = TaskQueue(client)
        await queue.submit(b"t0")
        handle = await late_reply(
            proxy, caplog, lambda: queue.submit(b"t1"), count_is(zk, TASKS, 2)
        )
        assert handle.id == "task-0000000001"
    assert await children(zk, TASKS) == ["task-0000000000", "task-0000000001"]


async def test_submit_with_a_lost_reply_finds_its_task_among_others(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """Tasks submitted before and after it (by others, while its reply was held back): the
    marker's czxid picks out the right one."""
    others = TaskQueue(zk)
    for i in range(19):
        await others.submit(f"before {i}".encode())
    async with through_proxy(zk_server, namespace) as (proxy, client):
        queue = TaskQueue(client)
        await queue.submit(b"before 19")  # (a first submit makes sure of the tree, with replies)

        async def applied() -> bool:
            if len(await children(zk, TASKS)) < 21:
                return False
            for i in range(7):  # ours is in; more come after it
                await others.submit(f"after {i}".encode())
            return True

        outcome = await lose_reply(proxy, lambda: queue.submit(b"mine"), applied)
        assert outcome.value is not None
        assert outcome.value.id == "task-0000000020"
        assert (await zk.get(outcome.value.path))[0] == b"mine"
    assert len(await children(zk, TASKS)) == 28


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
async def test_submit_whose_session_was_lost_meanwhile_says_the_outcome_is_unknown(
    zk_server: ZooKeeperServer, namespace: str, zk: Client, applied: bool
) -> None:
    """The marker went with the session: rather than risk a second task, ConnectionLoss says so
    (whether the task was queued or not)."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        queue = TaskQueue(client)
        await queue.submit(b"t0")
        errors: list[BaseException] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def submit() -> None:
                    try:
                        await queue.submit(b"t1")
                    except ConnectionLoss as exc:
                        errors.append(exc)

                if applied:
                    proxy.stall_replies()
                else:
                    proxy.stall()
                tg.start_soon(submit)
                if applied:
                    await eventually_async_count(zk, TASKS, 2)
                else:
                    await eventually(lambda: proxy.held_requests > 0, timeout=10)
                await expire_then_cut(proxy, client, zk_server, applied=applied)
        assert len(errors) == 1
        assert "may or may not be queued" in str(errors[0])
        assert len(await children(zk, TASKS)) == (2 if applied else 1)
        # the queue goes on on the new session (the old markers went with the old one)
        assert (await queue.submit(b"t2")).id == f"task-000000000{2 if applied else 1}"
        assert len(await children(zk, MARKERS)) == 1


async def test_markers_stay_out_of_the_task_tree(zk: Client) -> None:
    """Kazoo's layout: ``tasks/`` holds only ``task-`` nodes; the markers are elsewhere."""
    queue = TaskQueue(zk)
    handles = [await queue.submit(f"t{i}".encode()) for i in range(5)]
    assert await children(zk, TASKS) == [h.id for h in handles]
    assert len(await children(zk, MARKERS)) == 1
    # a marker already gone (e.g. of a submit whose outcome was unknown) is skipped
    await zk.delete(f"{MARKERS}/{(await children(zk, MARKERS))[0]}")
    await queue.submit(b"t5")
    assert len(await children(zk, TASKS)) == 6
    assert len(await children(zk, MARKERS)) == 1


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


async def test_publish_key_nodes_are_pruned_with_versions(zk: Client) -> None:
    store = ConfigStore(zk, PATH, retention=5)
    for i in range(23):
        await store.publish(f"v{i}".encode())
    await store.publish(b"keyed", key="k")
    await store.prune()
    keys = await children(zk, f"{PATH}-keys")
    assert 5 <= len(keys) <= 10 and _sha("k") in keys  # pruned past twice the retention
    assert len(await children(zk, PATH)) == 5


# -- Election candidates -------------------------------------------------------------------
async def test_candidate_whose_reply_was_lost_is_adopted_not_doubled(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    """The candidate's create was applied, its reply lost: the election finds its node among
    the session's ephemerals and leads with it; there is never a second candidate."""
    async with through_proxy(zk_server, namespace) as (proxy, client):
        election = Election(client, "/election", identity="a")
        await zk.ensure_path("/election")  # (else the create's first reply is a NoNode)

        async def lead_once() -> list[str]:
            async with election.lead():
                return await children(zk, "/election")

        outcome = await lose_reply(proxy, lead_once, count_is(zk, "/election", 1))
    assert outcome.error is None
    assert outcome.value is not None and len(outcome.value) == 1, outcome.value
