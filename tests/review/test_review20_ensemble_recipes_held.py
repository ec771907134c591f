"""Review 20, held: Lock holders on a 3-member ensemble whose leader is killed under them, each
hold making guarded writes; in the order ZooKeeper applied them (mzxid), the tokens never go
back (no two holders), and the holds go on after the election."""

from __future__ import annotations

import anyio

from aiocoord import Client, CoordError, Lock, LockLost, Op
from aiocoord.testing import ZooKeeperEnsemble
from tests.helpers import eventually

DATA = "/lock-data"


async def test_lock_holders_across_a_leader_kill_never_overlap(
    zk_ensemble: ZooKeeperEnsemble, namespace: str
) -> None:
    writes: list[tuple[int, int, str]] = []  # (mzxid, token, who)
    leader = zk_ensemble.leader()
    assert leader is not None
    clients = [Client(zk_ensemble.hosts, namespace=namespace, session_timeout=4) for _ in range(3)]
    for c in clients:
        await c.__aenter__()
    try:
        await clients[0].create(DATA, b"", makepath=True)
        stop = anyio.Event()

        async def contend(i: int) -> None:
            lock = Lock(clients[i], "/lock", f"c{i}")
            while not stop.is_set():
                try:
                    async with lock as hold:
                        for n in range(5):
                            (r,) = await hold.guard([Op.set_data(DATA, f"{i}-{n}".encode())])
                            writes.append((r.stat.mzxid, hold.token.czxid, f"c{i}"))
                            await anyio.sleep(0.02)
                except (LockLost, CoordError):
                    await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(contend, i)
            await eventually(lambda: len(writes) >= 20, 20)
            zk_ensemble.members[leader].kill()
            before = len(writes)
            await eventually(lambda: len(writes) >= before + 30, 60)
            stop.set()
        highest = (0, 0, "")
        for mzxid, token, who in sorted(writes):
            assert token >= highest[1], (
                f"token {token:#x} ({who}) wrote at {mzxid:#x} after {highest[1]:#x} "
                f"({highest[2]}) wrote at {highest[0]:#x}"
            )
            highest = (mzxid, token, who)
    finally:
        for c in clients:
            await c.aclose()
