"""Every operation and error mapping, against a real ZooKeeper."""

from __future__ import annotations

import re

import anyio
import pytest

import aiocoord
from aiocoord import (
    CREATOR_ALL_ACL,
    READ_ACL_UNSAFE,
    BadVersion,
    Client,
    EventType,
    InvalidACL,
    NoAuth,
    NoChildrenForEphemerals,
    NodeExists,
    NoNode,
    NotEmpty,
    Op,
    Perm,
    digest_acl,
)
from aiocoord.testing import ZooKeeperServer
from tests.helpers import Recorder

pytestmark = pytest.mark.both_loops


async def test_create_get_set_delete_round_trip(zk: Client) -> None:
    assert await zk.create("/node", b"v1") == "/node"
    data, stat = await zk.get("/node")
    assert data == b"v1"
    assert stat.version == 0 and stat.data_length == 2
    stat2 = await zk.set("/node", b"v2", version=0)
    assert stat2.version == 1 and stat2.mzxid > stat.mzxid
    assert (await zk.get("/node"))[0] == b"v2"
    with pytest.raises(BadVersion) as info:
        await zk.set("/node", b"v3", version=0)
    assert info.value.path == "/node" and info.value.code == -103
    with pytest.raises(BadVersion):
        await zk.delete("/node", version=5)
    await zk.delete("/node", version=1)
    assert await zk.exists("/node") is None


async def test_errors_are_typed(zk: Client) -> None:
    with pytest.raises(NoNode):
        await zk.get("/missing")
    with pytest.raises(NoNode):
        await zk.set("/missing", b"")
    with pytest.raises(NoNode):
        await zk.create("/missing/child")
    await zk.create("/p")
    with pytest.raises(NodeExists):
        await zk.create("/p")
    await zk.create("/p/c")
    with pytest.raises(NotEmpty):
        await zk.delete("/p")
    await zk.create("/eph", ephemeral=True)
    with pytest.raises(NoChildrenForEphemerals):
        await zk.create("/eph/child")
    # all of them are CoordErrors: one root for callers
    with pytest.raises(aiocoord.CoordError):
        await zk.get("/missing")


async def test_sequential_and_ephemeral_nodes(zk: Client, zk_server: ZooKeeperServer) -> None:
    await zk.create("/q")
    first = await zk.create("/q/item-", b"a", sequential=True)
    second = await zk.create("/q/item-", b"b", sequential=True, ephemeral=True)
    assert first == "/q/item-0000000000" and second == "/q/item-0000000001"
    stat = await zk.exists(second)
    assert stat is not None and stat.ephemeral_owner == zk.session_id
    assert await zk.get_ephemerals("/q") == [second]
    async with Client(zk_server.hosts, namespace=zk.namespace) as other:
        eph = await other.create("/other-eph", ephemeral=True)
        assert await other.exists(eph) is not None
    # the other session closed: its ephemeral node is gone at once, not after a timeout
    assert await zk.exists("/other-eph") is None
    assert sorted(await zk.children("/q")) == ["item-0000000000", "item-0000000001"]


async def test_children_with_stat_and_makepath(zk: Client) -> None:
    assert await zk.create("/a/b/c", b"deep", makepath=True) == "/a/b/c"
    assert await zk.children("/a") == ["b"]
    names, stat = await zk.children_with_stat("/a/b")
    assert names == ["c"] and stat.num_children == 1
    await zk.ensure_path("/a/b/x/y")
    assert await zk.exists("/a/b/x/y") is not None
    await zk.delete("/a", recursive=True)
    assert await zk.exists("/a") is None


async def test_container_and_ttl_nodes_are_removed_by_the_server(zk: Client) -> None:
    await zk.create("/box", container=True)
    await zk.create("/box/item")
    await zk.delete("/box/item")
    await zk.create("/ttl", b"t", ttl=0.5)
    box_gone, ttl_gone = Recorder(), Recorder()
    await zk.exists("/box", watch=box_gone)
    await zk.exists("/ttl", watch=ttl_gone)
    # the server's container manager runs every second in the test servers
    assert [e.type for e in await box_gone.wait(timeout=15)] == [EventType.NODE_DELETED]
    assert [e.type for e in await ttl_gone.wait(timeout=15)] == [EventType.NODE_DELETED]
    with pytest.raises(ValueError):
        await zk.create("/bad", ephemeral=True, ttl=1)
    with pytest.raises(ValueError):
        await zk.create("/bad", container=True, sequential=True)


async def test_acl_and_digest_auth(zk: Client, zk_server: ZooKeeperServer) -> None:
    acl = (digest_acl("alice", "secret"), aiocoord.ACL(Perm.READ, "world", "anyone"))
    await zk.create("/guarded", b"x", acl=acl)
    got, stat = await zk.get_acl("/guarded")
    # without ADMIN on the node the server redacts the digest hash (ZOOKEEPER-1392)
    assert set(got) == {aiocoord.ACL(Perm.ALL, "digest", "alice:x"), acl[1]}
    assert stat.aversion == 0
    with pytest.raises(NoAuth):
        await zk.set("/guarded", b"y")
    # the creator-only ACL needs an authenticated session
    with pytest.raises(InvalidACL):
        await zk.create("/mine", acl=CREATOR_ALL_ACL)
    async with Client(
        zk_server.hosts, namespace=zk.namespace, auth=[("digest", "alice:secret")]
    ) as alice:
        assert ("digest", "alice") in await alice.whoami()
        assert set((await alice.get_acl("/guarded"))[0]) == set(acl)
        await alice.set("/guarded", b"y")
        await alice.create("/mine", b"m", acl=CREATOR_ALL_ACL)
        await alice.set_acl("/mine", READ_ACL_UNSAFE)
    assert (await zk.get("/guarded"))[0] == b"y"
    assert (await zk.get_acl("/mine"))[0] == list(READ_ACL_UNSAFE)
    with pytest.raises(NoAuth):
        await zk.set("/mine", b"")
    await zk.add_auth("digest", "alice:secret")
    await zk.set("/guarded", b"z")


async def test_multi_applies_all_or_nothing(zk: Client) -> None:
    await zk.create("/m", b"0")
    results = await zk.multi(
        [Op.create("/m/a", b"1"), Op.check("/m", 0), Op.set_data("/m", b"1"), Op.delete("/m/a")]
    )
    assert [type(r).__name__ for r in results] == [
        "CreateResult",
        "CheckResult",
        "SetDataResult",
        "DeleteResult",
    ]
    assert results[0].path == "/m/a"  # type: ignore[union-attr]
    before = await zk.exists("/m")
    with pytest.raises(aiocoord.MultiFailed) as info:
        await zk.multi([Op.create("/m/b"), Op.check("/m", 0), Op.set_data("/m", b"2")])
    failed = info.value
    assert failed.index == 1 and isinstance(failed.cause, BadVersion)
    assert failed.cause.path == "/m"
    assert isinstance(failed.results[0], aiocoord.RolledBack)
    assert isinstance(failed.results[2], aiocoord.RuntimeInconsistency)
    # nothing of the failed multi was applied
    assert await zk.exists("/m/b") is None
    assert (await zk.get("/m"))[0] == b"1"
    assert before is not None and await zk.exists("/m") == before
    seq = await zk.multi([Op.create("/m/s-", sequential=True, ephemeral=True)])
    assert re.fullmatch(r"/m/s-\d{10}", seq[0].path)  # type: ignore[union-attr]


async def test_sync_and_pipelined_requests_in_order(zk: Client) -> None:
    await zk.create("/counter", b"0")
    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(zk.set, "/counter", str(i).encode())
    await zk.sync("/counter")
    _, stat = await zk.get("/counter")
    assert stat.version == 200


async def test_namespace_is_a_chroot(zk: Client, zk_server: ZooKeeperServer) -> None:
    await zk.create("/inside", b"1")
    async with Client(zk_server.hosts) as root:
        data, _ = await root.get(f"{zk.namespace}/inside")
        assert data == b"1"
    async with Client(zk_server.hosts + zk.namespace) as same:
        assert same.namespace == zk.namespace
        assert await same.children("/") == ["inside"]
