"""Review 20: the session layer against a 3-member ensemble: a member SIGSTOPped past the session
timeout under the client, the quorum leader killed with writes streaming, a member restarted with
an EMPTY data directory under the client. What is checked: the session moves before it expires or
LOST comes within the negotiated timeout; an acknowledged write is never lost; a write that failed
with ConnectionLoss and was then read as absent never appears later (a stale request applied from
the paused member); a session's reads never go back in time (mzxid of a node never decreases)."""

from __future__ import annotations

import itertools
import time

import anyio
import pytest

from aiocoord import Client, ConnectionLoss, CoordError, SessionExpired, SessionState
from aiocoord.testing import ZooKeeperEnsemble
from tests.helpers import eventually


async def _client_on(ensemble: ZooKeeperEnsemble, want: int, namespace: str, timeout: float):
    """A client (entered) whose session is on member ``want``: hosts listed with it first; tried
    until the shuffle puts it there."""
    for _ in range(30):
        client = Client(ensemble.hosts, namespace=namespace, session_timeout=timeout)
        await client.__aenter__()
        if ensemble.index_of(client.connected_host) == want:
            return client
        await client.aclose()
    raise AssertionError("never connected to the wanted member")


@pytest.mark.parametrize("role", ["follower", "leader"])
async def test_paused_member_past_the_session_timeout(
    zk_ensemble: ZooKeeperEnsemble, namespace: str, role: str
) -> None:
    leader = zk_ensemble.leader()
    assert leader is not None
    target = leader if role == "leader" else (leader + 1) % 3
    timeout = 4.0
    client = await _client_on(zk_ensemble, target, namespace, timeout)
    try:
        await client.ensure_path("/")
        session = client.session_id
        negotiated = client.negotiated_timeout
        outcome: list[object] = []
        async with client.session_events() as feed:
            zk_ensemble.members[target].pause()
            paused_at = time.monotonic()

            async def write() -> None:
                try:
                    outcome.append(await client.create("/inflight", b"x"))
                except CoordError as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                seen = []
                with anyio.fail_after(negotiated + 20):
                    async for event in feed:
                        seen.append((event.state, time.monotonic() - paused_at))
                        if event.state in (SessionState.RECONNECTED, SessionState.LOST):
                            break
            state, at = seen[-1]
            if state is SessionState.LOST:
                # LOST must be reported within the negotiated timeout (plus scheduling slack)
                assert at <= negotiated + 1.0, seen
            else:
                assert client.session_id == session
                # it moved before the session could expire
                assert at <= negotiated, seen
            with anyio.fail_after(30):
                await client.wait_connected()
                await client.sync("/")
                before = await client.exists("/inflight")
            zk_ensemble.members[target].resume()
            await anyio.to_thread.run_sync(zk_ensemble.wait_serving)
            # a sentinel through the resumed member: anything it held from the paused time went
            # through its pipeline before this
            async with Client(zk_ensemble.member_hosts(target), namespace=namespace) as other:
                await other.create("/sentinel")
                after = await other.exists("/inflight")
            if isinstance(outcome[0], (ConnectionLoss, SessionExpired)) and before is None:
                assert after is None, (outcome, "a write read as absent appeared later")
            elif not isinstance(outcome[0], CoordError):
                assert after is not None, outcome
    finally:
        await client.aclose()


async def test_leader_killed_with_writes_streaming_no_acknowledged_write_lost_reads_monotonic(
    zk_ensemble: ZooKeeperEnsemble, namespace: str
) -> None:
    leader = zk_ensemble.leader()
    assert leader is not None
    writer = await _client_on(zk_ensemble, leader, namespace, 10.0)
    acked: list[int] = []
    unknown: list[int] = []
    mzxids: list[int] = []
    try:
        async with Client(zk_ensemble.hosts, namespace=namespace, session_timeout=10) as reader:
            await writer.ensure_path("/w")
            await writer.create("/latest", b"0")
            stop = anyio.Event()

            async def write() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        await writer.create(f"/w/{n:06d}")
                        await writer.set("/latest", str(n).encode())
                        acked.append(n)
                    except (ConnectionLoss, SessionExpired) as exc:
                        unknown.append(n)
                        del exc
                    except CoordError:
                        unknown.append(n)

            async def read() -> None:
                while not stop.is_set():
                    try:
                        _, stat = await reader.get("/latest")
                    except CoordError:
                        await anyio.sleep(0.05)
                        continue
                    mzxids.append(stat.mzxid)
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                tg.start_soon(read)
                await eventually(lambda: len(acked) >= 20, 10)
                zk_ensemble.members[leader].kill()
                killed_at = len(acked)
                await eventually(lambda: len(acked) >= killed_at + 20, 60)
                stop.set()
            with anyio.fail_after(30):
                await writer.sync("/w")
                present = {int(n) for n in await writer.children("/w")}
            missing = [n for n in acked if n not in present]
            assert not missing, f"acknowledged creates lost: {missing}"
            back = [(a, b) for a, b in itertools.pairwise(mzxids) if b < a]
            assert not back, f"reads went back in time: {back[:5]}"
    finally:
        await writer.aclose()


async def test_member_restarted_empty_under_the_client_reads_never_go_back(
    zk_ensemble: ZooKeeperEnsemble, namespace: str
) -> None:
    leader = zk_ensemble.leader()
    assert leader is not None
    target = (leader + 1) % 3
    client = await _client_on(zk_ensemble, target, namespace, 10.0)
    try:
        session = client.session_id
        await client.create("/v", b"0", makepath=True)
        for i in range(1, 30):
            await client.set("/v", str(i).encode())
        _, stat = await client.get("/v")
        seen_mzxid = stat.mzxid
        async with client.session_events() as feed:
            zk_ensemble.members[target].kill()
            zk_ensemble.members[target].wipe_data()
            zk_ensemble.members[target].start()
            with anyio.fail_after(30):
                async for event in feed:
                    if event.state in (SessionState.RECONNECTED, SessionState.LOST):
                        break
            assert event.state is SessionState.RECONNECTED and client.session_id == session
            data, stat = await client.get("/v")
            assert stat.mzxid >= seen_mzxid and data == b"29"
            await anyio.to_thread.run_sync(zk_ensemble.wait_serving)
            # now the wiped member serves: pin a session of ours there, through the move
            for _ in range(20):
                data, stat = await client.get("/v")
                assert stat.mzxid >= seen_mzxid and data == b"29", (data, stat)
                await anyio.sleep(0.05)
    finally:
        await client.aclose()
