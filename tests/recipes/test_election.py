"""Election against a real ZooKeeper: handover, ranks, no herd, N leaders, fencing, expiry,
ensemble member loss, kill -9 and SIGSTOP of a leader process, and kazoo-made candidates."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from kazoo.client import KazooClient

from aiocoord import (
    Client,
    ClientClosed,
    Election,
    LeadershipLost,
    Op,
    SessionState,
    Term,
)
from aiocoord.testing import (
    TcpProxy,
    ZooKeeperEnsemble,
    ZooKeeperServer,
    expire_session,
    four_letter_word,
)
from tests.helpers import eventually, eventually_async, holds, holds_async, read_line, wait_state
from tests.recipes.test_config import watched_by

LEADER_PROCESS = Path(__file__).with_name("leader_process.py")


class Contender:
    """One candidate in its own session, leading in a background task until released."""

    def __init__(self, client: Client, election: Election) -> None:
        self.client = client
        self.election = election
        self.leading = anyio.Event()
        self.release = anyio.Event()
        self.ended = anyio.Event()
        self.term: Term | None = None
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            async with self.election.lead() as term:
                self.term = term
                self.leading.set()
                await self.release.wait()
        except (LeadershipLost, ClientClosed) as exc:
            self.error = exc
        finally:
            self.ended.set()

    @property
    def is_leading(self) -> bool:
        return self.leading.is_set() and not self.ended.is_set()


@asynccontextmanager
async def contenders(
    hosts: str, namespace: str, count: int, *, path: str = "/election", **kwargs: object
) -> AsyncIterator[list[Contender]]:
    """``count`` contenders, started in order (so candidate i has the i-th lowest node)."""
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        out = []
        for i in range(count):
            client = await stack.enter_async_context(
                Client(hosts, namespace=namespace, session_timeout=4)
            )
            c = Contender(client, Election(client, path, identity=f"c{i}", **kwargs))  # type: ignore[arg-type]
            out.append(c)
            tg.start_soon(c.run)
            # its node exists before the next one is made
            await eventually(lambda c=c: c.election.candidate_path is not None, 5)
        yield out
        for c in out:
            c.release.set()
        tg.cancel_scope.cancel()


async def settle(*clients: Client) -> None:
    for client in clients:
        await client.sync("/")
        await client.exists("/")


async def test_graceful_resign_hands_over_at_once(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with contenders(zk_server.hosts, namespace, 2) as (a, b):
        with anyio.fail_after(5):
            await a.leading.wait()
        assert a.term is not None and a.term.rank == 0
        assert [c.identity for c in await b.election.current_leaders()] == ["c0"]
        await settle(b.client)
        await holds(lambda: not b.leading.is_set())
        old_node = a.term.path
        started = time.monotonic()
        a.release.set()
        with anyio.fail_after(5):
            await b.leading.wait()
        assert time.monotonic() - started < 2  # no session timeout (4 s) to wait for
        assert await b.client.exists(old_node) is None
        assert a.error is None


async def test_body_error_resigns_and_propagates(zk: Client) -> None:
    election = Election(zk, "/e")
    with pytest.raises(ValueError, match="boom"):
        async with election.lead():
            raise ValueError("boom")
    assert await zk.children("/e") == []


async def test_middle_candidate_dying_does_not_promote_its_successor_early(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with contenders(zk_server.hosts, namespace, 3) as (a, b, c):
        with anyio.fail_after(5):
            await a.leading.wait()
        await b.client.aclose()  # the middle candidate's session ends: its node goes
        await settle(a.client, c.client)
        await eventually(lambda: c.election._wakeups == 1, 5)  # woken by its predecessor's death
        await holds(lambda: c.election._wakeups == 1 and not c.leading.is_set())  # a still leads
        a.release.set()
        with anyio.fail_after(5):
            await c.leading.wait()


async def test_twenty_candidates_a_leader_kill_wakes_only_the_next(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    async with contenders(zk_server.hosts, namespace, 20) as cs:
        with anyio.fail_after(5):
            await cs[0].leading.wait()
        await settle(*(c.client for c in cs))

        def watched_by_successors() -> list[int]:
            """The candidates whose node is not watched by exactly its successor's session
            (the leader also watches its own node, to notice losing it)."""
            watches = _watchers_by_path(zk_server, f"{namespace}/election/")
            wrong = []
            for i, c in enumerate(cs):
                path = c.election.candidate_path
                watchers = watches.get(f"{namespace}{path}", set())
                others = watchers - {f"0x{c.client.session_id:x}"}
                expected = {f"0x{cs[i + 1].client.session_id:x}"} if i < 19 else set()
                if path is None or others != expected:
                    wrong.append(i)
            return wrong

        # on the server: each candidate node but the last is watched by one other session
        await eventually(lambda: not watched_by_successors(), 10, interval=0.1)
        await expire_session(cs[0].client)  # the leader's session dies as in a kill
        with anyio.fail_after(10):
            await cs[1].leading.wait()
        await settle(*(c.client for c in cs[1:]))
        await holds(
            lambda: (
                cs[1].election._wakeups == 1 and [c.election._wakeups for c in cs[2:]] == [0] * 18
            )
        )
        with anyio.fail_after(5):  # its body was cancelled at SUSPENDED; lead() then unwinds
            await cs[0].ended.wait()
        assert sum(c.is_leading for c in cs) == 1


def _watchers_by_path(server: ZooKeeperServer, prefix: str) -> dict[str, set[str]]:
    host, port = server.hosts.split(":")
    out: dict[str, set[str]] = {}
    path = ""
    for line in four_letter_word(host, int(port), "wchp").splitlines():
        if line.startswith("/"):
            path = line.strip()
        elif line.strip() and path.startswith(prefix):
            out.setdefault(path, set()).add(line.strip())
    return out


async def test_n_leaders_stay_n_through_kills(zk_server: ZooKeeperServer, namespace: str) -> None:
    async with contenders(zk_server.hosts, namespace, 6, leaders=2) as cs:
        with anyio.fail_after(5):
            await cs[0].leading.wait()
            await cs[1].leading.wait()
        assert sorted(c.term.rank for c in cs[:2] if c.term) == [0, 1]
        alive = list(cs)
        for victim in (cs[1], cs[3], cs[0], cs[2]):  # leaders and waiters, in a mixed order
            await expire_session(victim.client)
            alive.remove(victim)
            with anyio.fail_after(10):
                for c in alive[:2]:
                    await c.leading.wait()
                if victim.leading.is_set():  # cancelled at SUSPENDED; lead() then unwinds
                    await victim.ended.wait()
            await settle(*(c.client for c in alive))
            await holds(  # the deposed ones do not lead
                lambda: (
                    [c for c in alive if c.is_leading] == alive[:2]
                    and sum(c.is_leading for c in cs) == 2
                )
            )
            observed = await alive[0].election.current_leaders()
            assert [o.identity for o in observed] == [c.election.identity for c in alive[:2]]


async def test_server_side_expiry_of_the_leader(zk_server: ZooKeeperServer, namespace: str) -> None:
    async with contenders(zk_server.hosts, namespace, 2) as (a, b):
        with anyio.fail_after(5):
            await a.leading.wait()
        term = a.term
        assert term is not None
        await term.guard([Op.create("/by-leader")])
        await expire_session(a.client)
        with anyio.fail_after(10):
            await a.ended.wait()
            await b.leading.wait()
        assert isinstance(a.error, LeadershipLost)
        with pytest.raises(LeadershipLost):  # the deposed term can no longer write
            await term.guard([Op.create("/by-deposed-leader")])
        assert await b.client.exists("/by-deposed-leader") is None


async def test_run_re_contends_after_loss(zk_server: ZooKeeperServer, namespace: str) -> None:
    async with (
        Client(zk_server.hosts, namespace=namespace, session_timeout=4) as zk,
        anyio.create_task_group() as tg,
    ):
        election = Election(zk, "/e")
        terms: list[int] = []
        second = anyio.Event()

        async def body(term: Term) -> str:
            terms.append(term.token.czxid)
            if term.token.czxid == terms[0]:
                # the first node; also when the client briefly reconnects the session before
                # the server has closed it: still alive, still ours, same token
                await anyio.sleep_forever()
            second.set()
            return "done"

        async def runner() -> None:
            assert await election.run(body) == "done"

        tg.start_soon(runner)
        await eventually(lambda: bool(terms), 5)
        await expire_session(zk)
        with anyio.fail_after(10):
            await second.wait()
        assert terms[-1] > terms[0]  # after the loss: a new node, a new fencing token


@pytest.mark.parametrize("tolerate", [True, False], ids=["tolerate-suspended", "default"])
async def test_ensemble_member_killed_under_the_leader_is_no_failover(
    zk_ensemble: ZooKeeperEnsemble, namespace: str, tolerate: bool
) -> None:
    async with (
        Client(zk_ensemble.hosts, namespace=namespace, session_timeout=10) as leader_zk,
        Client(zk_ensemble.hosts, namespace=namespace, session_timeout=10) as other_zk,
        leader_zk.session_events() as feed,
        anyio.create_task_group() as tg,
    ):
        starts: list[float] = []
        other_led = anyio.Event()

        async def leader_body(term: Term) -> None:
            starts.append(time.monotonic())
            await anyio.sleep_forever()

        async def other_body(term: Term) -> None:
            other_led.set()

        leader = Election(leader_zk, "/e", tolerate_suspended=tolerate)
        tg.start_soon(leader.run, leader_body)
        await eventually(lambda: bool(starts), 5)
        tg.start_soon(Election(other_zk, "/e").run, other_body)
        await settle(other_zk)
        zk_ensemble.members[zk_ensemble.index_of(leader_zk.connected_host)].kill()
        await wait_state(feed, SessionState.RECONNECTED, 20)
        await settle(leader_zk, other_zk)
        expected = 1 if tolerate else 2  # default: the body restarts, same leader
        await eventually(lambda: len(starts) >= expected, 10)
        await holds(lambda: not other_led.is_set() and len(starts) == expected)
        tg.cancel_scope.cancel()


async def test_kazoo_script_candidates_share_the_election(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    kazoo = KazooClient(hosts=zk_server.hosts + zk.namespace, timeout=10)
    await anyio.to_thread.run_sync(lambda: kazoo.start(timeout=15))
    try:
        # the old script's way: an ephemeral-sequential `worker` node under the election path
        node = await anyio.to_thread.run_sync(
            lambda: kazoo.create(
                "/app/zk_test/worker", b"legacy", ephemeral=True, sequence=True, makepath=True
            )
        )
        election = Election(zk, "/app/zk_test", identity="aiocoord")
        async with anyio.create_task_group() as tg:
            led = anyio.Event()

            async def contend() -> None:
                async with election.lead() as term:
                    assert term.rank == 0
                    led.set()
                    await anyio.sleep_forever()

            tg.start_soon(contend)
            await settle(zk)
            await holds(lambda: not led.is_set())
            assert [c.identity for c in await election.candidates()] == ["legacy", "aiocoord"]
            await anyio.to_thread.run_sync(kazoo.delete, node)
            with anyio.fail_after(5):
                await led.wait()
            # and the script sees aiocoord's node as the lowest `worker` sequence
            names = await anyio.to_thread.run_sync(kazoo.get_children, "/app/zk_test")
            assert len(names) == 1 and names[0].startswith("worker")
            tg.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(kazoo.stop)
        kazoo.close()


@asynccontextmanager
async def leader_process(
    hosts: str, namespace: str, timeout: float
) -> AsyncIterator[anyio.abc.Process]:
    cmd = [sys.executable, str(LEADER_PROCESS), hosts, namespace, "/e", str(timeout), "old"]
    async with await anyio.open_process(cmd) as proc:
        try:
            assert proc.stdout is not None
            assert (await read_line(proc.stdout, 20)).startswith("leading")
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_kill_9_of_the_leader_hands_over_after_the_session_timeout(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    await zk.create("/fenced", b"")
    async with leader_process(zk_server.hosts, zk.namespace, 2) as proc:
        new = Contender(zk, Election(zk, "/e", identity="new"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(new.run)
            await settle(zk)
            await holds(lambda: not new.leading.is_set())
            proc.kill()
            killed = time.monotonic()
            with anyio.fail_after(10):
                await new.leading.wait()
            took = time.monotonic() - killed
            new.release.set()
    # the server noticed the dead session after its timeout, not before
    assert 1.0 < took < 2 * 2 + 2


async def test_sigstopped_leader_is_fenced_and_cancelled_when_it_resumes(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    await zk.create("/fenced", b"")
    async with leader_process(zk_server.hosts, zk.namespace, 2) as proc:
        assert proc.stdout is not None
        new = Contender(zk, Election(zk, "/e", identity="new"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(new.run)
            await settle(zk)

            async def old_writes() -> bool:
                return (await zk.get("/fenced"))[0].startswith(b"old ")

            await eventually_async(old_writes, 10)  # the leader's first guarded write landed
            proc.send_signal(__import__("signal").SIGSTOP)
            try:
                with anyio.fail_after(10):
                    await new.leading.wait()  # the paused leader's session expired
                assert new.term is not None
                await new.term.guard([Op.set_data("/fenced", b"new")])
            finally:
                proc.send_signal(__import__("signal").SIGCONT)
            lines = []
            with anyio.fail_after(10):
                while "body-cancelled" not in lines:
                    lines.append((await read_line(proc.stdout, 10)).strip())
            await settle(zk)
            # observed while the resumed process tries to write: none of its writes lands
            await holds_async(lambda: fenced_is(zk, b"new"), 0.5)
            assert all(line.startswith("guard-failed") for line in lines[:-1])
            new.release.set()


class _SuspendsAfterTheLeaderCheck(Client):
    """A client whose connection is cut right after the new leader's node check is answered,
    and which reports that check only once SUSPENDED is announced: the session changes between
    taking leadership and the term's listener being there (the race this pins)."""

    proxy: TcpProxy

    async def exists(self, path: str, *, watch: Any = None) -> Any:
        stat = await super().exists(path, watch=watch)
        if getattr(watch, "__name__", "") == "_on_node_event":
            self.proxy.cut()
            await eventually(lambda: self.state is SessionState.SUSPENDED, timeout=10)
        return stat


async def test_suspended_before_the_terms_listener_is_not_missed(
    zk_server: ZooKeeperServer, namespace: str
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        client = _SuspendsAfterTheLeaderCheck(
            proxy.address, namespace=namespace, session_timeout=20
        )
        client.proxy = proxy
        async with client:
            with anyio.fail_after(15), pytest.raises(LeadershipLost):
                async with Election(client, "/election").lead():
                    await anyio.sleep_forever()


async def fenced_is(zk: Client, data: bytes) -> bool:
    return (await zk.get("/fenced"))[0] == data


async def test_a_waiting_candidate_cancelled_leaves_no_watch(
    zk: Client, zk_server: ZooKeeperServer
) -> None:
    async with (
        Election(zk, "/e", identity="leader").lead(),
        Client(zk_server.hosts, namespace=zk.namespace) as other,
    ):
        with anyio.move_on_after(0.5):
            async with Election(other, "/e", identity="waiter").lead():
                raise AssertionError("not leading while the other leads")  # pragma: no cover
        await other.sync("/")
        await other.exists("/")
        assert watched_by(zk_server, other) == []  # not its predecessor's node
