"""Party and ShallowParty against a real ZooKeeper: kazoo's layouts (kazoo members and aiocoord
ones in the same party, both ways), the latest-wins feed, re-joining after session expiry,
leaving on cancellation and a lost create reply."""

from __future__ import annotations

import itertools
import re

import anyio
import pytest

from aiocoord import Client, Party, SessionState, ShallowParty
from aiocoord.testing import ZooKeeperServer, expire_session
from tests.helpers import count_is, eventually, eventually_async, kazoo_client
from tests.transport.test_protected_create import lose_reply, through_proxy

PARTY_NODE = re.compile(r"^[0-9a-f]{32}__party__$")
SHALLOW_NODE = re.compile(r"^[0-9a-f]{32}-(.*)$")


async def test_party_layout_members_and_leave(zk: Client) -> None:
    party = Party(zk, "/party", "a")
    assert await party.members() == []
    async with party.join() as membership:
        (name,) = await zk.children("/party")
        assert PARTY_NODE.match(name) and membership.path == f"/party/{name}"
        assert (await zk.get(f"/party/{name}"))[0] == b"a" and membership.joined
        await zk.create("/party/not-a-member", b"x")  # (kazoo counts only __party__ nodes)
        async with Party(zk, "/party", "b").join():
            assert await party.members() == ["a", "b"]
        assert await party.members() == ["a"]
    assert await zk.children("/party") == ["not-a-member"]


async def test_shallow_party_layout(zk: Client) -> None:
    party = ShallowParty(zk, "/shallow", "host-1:80")
    async with party.join(), ShallowParty(zk, "/shallow", "b").join():
        names = await zk.children("/shallow")
        assert sorted(SHALLOW_NODE.match(n).group(1) for n in names) == ["b", "host-1:80"]  # type: ignore[union-attr]
        assert await party.members() == ["b", "host-1:80"]
    assert await zk.children("/shallow") == []
    with pytest.raises(ValueError, match="node name"):
        ShallowParty(zk, "/shallow", "a/b")


async def test_the_feed_follows_the_members(zk: Client) -> None:
    party = Party(zk, "/feed", "a")
    async with party.watch() as feed:
        assert feed.members == []
        seen: list[list[str]] = []
        got = anyio.Event()

        async def follow() -> None:
            async for members in feed:
                seen.append(members)
                if members == [] and ["a", "b"] in seen:
                    got.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            async with party.join():
                await eventually(lambda: feed.members == ["a"], 5)
                async with Party(zk, "/feed", "b").join():
                    await eventually(lambda: feed.members == ["a", "b"], 5)
            with anyio.fail_after(5):
                await got.wait()
            tg.cancel_scope.cancel()
        # latest wins: each value differs from the one before it, and the last is the newest
        assert seen[0] == [] and seen[-1] == [] and ["a", "b"] in seen
        assert all(x != y for x, y in itertools.pairwise(seen))


async def test_kazoo_and_aiocoord_members_share_a_party(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    async with kazoo_client(zk_server, zk) as kazoo:
        for ours, theirs in (
            (Party(zk, "/p", "aiocoord"), kazoo.Party("/p", "kazoo")),
            (ShallowParty(zk, "/s", "aiocoord"), kazoo.ShallowParty("/s", "kazoo")),
        ):
            await anyio.to_thread.run_sync(theirs.join)
            assert await ours.members() == ["kazoo"]
            async with ours.join():
                assert sorted(await anyio.to_thread.run_sync(lambda t=theirs: list(t))) == [
                    "aiocoord",
                    "kazoo",
                ]
                assert await ours.members() == ["aiocoord", "kazoo"]
                await anyio.to_thread.run_sync(theirs.leave)
                assert await ours.members() == ["aiocoord"]
            assert await anyio.to_thread.run_sync(lambda t=theirs: len(t)) == 0


async def test_an_expired_member_joins_again(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with Client(zk_server.hosts, namespace=namespace, session_timeout=4) as client:
        party = Party(client, "/party", "m")
        async with party.join() as membership:
            first = client.session_id
            await expire_session(client)
            await eventually(lambda: membership.joins == 2 and membership.joined, 15)
            assert client.session_id != first
            (name,) = await zk.children("/party")
            stat = await zk.exists(f"/party/{name}")
            assert stat is not None and stat.ephemeral_owner == client.session_id
        assert await zk.children("/party") == []


async def test_cancelled_while_joining_leaves_no_node(zk: Client) -> None:
    # a node of another session under our name: the join waits it out, then is cancelled
    party = Party(zk, "/party", "m")
    async with Client(zk.hosts[0], namespace=zk.namespace, session_timeout=4) as other:
        await other.create(f"/party/{party.name}", b"old", ephemeral=True, makepath=True)
        with anyio.move_on_after(0.5) as scope:
            async with party.join():
                raise AssertionError("joined while the old node stays")  # pragma: no cover
        assert scope.cancelled_caught
        stat = await zk.exists(f"/party/{party.name}")
        assert stat is not None and stat.ephemeral_owner == other.session_id  # not deleted
    assert await zk.children("/party") == []


async def test_a_lost_create_reply_leaves_no_orphan(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    await zk.create("/party")
    async with through_proxy(zk_server, namespace) as (proxy, client):
        party = Party(client, "/party", "blip")
        session = client.session_id

        async def join() -> tuple[bool, list[str]]:
            async with party.join() as membership:
                return membership.joined, await zk.children("/party")

        outcome = await lose_reply(proxy, join, count_is(zk, "/party", 1))
        assert client.session_id == session and outcome.error is None
        assert outcome.value == (True, [party.name])  # adopted: the one node, ours
        await eventually_async(count_is(zk, "/party", 0, exactly=True), 10)


async def test_the_feed_catches_up_after_a_blip_and_an_expiry(
    zk_server: ZooKeeperServer, namespace: str, zk: Client
) -> None:
    async with (
        through_proxy(zk_server, namespace) as (proxy, client),
        Party(client, "/feed").watch() as feed,
    ):
        proxy.refuse()
        proxy.cut()
        await eventually(lambda: client.state is SessionState.SUSPENDED, 10)
        async with Party(zk, "/feed", "b").join():  # joins while the watcher is away
            proxy.accept()
            await eventually(lambda: feed.members == ["b"], 20)
        await eventually(lambda: feed.members == [], 20)
        await expire_session(client)
        async with Party(zk, "/feed", "c").join():  # the watches of the lost session are gone
            await eventually(lambda: feed.members == ["c"], 20)
