"""Review 20: fencing of a hold that has ended (``recipes/_session.py: Fenced.guard``, and
``recipes/lock.py: Semaphore``).

Finding: ``guard(ops)`` is ``multi([check(path, version), *ops])``: it proves only that *a* node
exists at the hold's path at the hold's version. A ``Semaphore`` makes its lease at the same path
on every hold (``self._lease = <path>/<uuid>`` fixed at construction), always at version 0, so a
hold that ended (released, or lost with its session) passes the check again as soon as the same
``Semaphore`` takes its next lease: a stale hold writes, with its old token, after another process
held the lease and wrote. Nor does ``guard`` look at ``hold.lost``, which it knows. With
``max_leases=1`` the write order is that of two holders: token a1 < b wrote after b did (what the
campaign's lock checker calls "two holders"). A ``Lock`` is fenced (its node's name is new on each
hold): the held counterpart below.
"""

from __future__ import annotations

import anyio
import pytest

from aiocoord import Client, Lock, LockLost, Op, Semaphore
from aiocoord.testing import ZooKeeperServer
from tests.helpers import eventually

DATA = "/fenced-data"


async def _write(hold, body: bytes) -> int:  # type: ignore[no-untyped-def]
    (result,) = await hold.guard([Op.set_data(DATA, body)])
    return result.stat.mzxid


async def test_a_released_semaphore_lease_cannot_write_once_its_semaphore_holds_again(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    await zk.create(DATA, b"", makepath=True)
    async with Client(zk_server.hosts, namespace=zk.namespace) as other:
        a = Semaphore(zk, "/sem", "a", max_leases=1)
        b = Semaphore(other, "/sem", "b", max_leases=1)
        with anyio.fail_after(20):
            first = await a.acquire()
            await _write(first, b"a1")
            await a.release()  # first has ended
            assert first.lost is not None or not a.held
            held_b = await b.acquire()
            b_at = await _write(held_b, b"b")
            await b.release()
            await a.acquire()  # a's next lease: the same path, version 0 again
        # the ended hold must be refused (LockLost); it writes, token first.token < b's
        with pytest.raises(LockLost):
            stale_at = await _write(first, b"stale a1")
            raise AssertionError(
                f"an ended hold (token {first.token.czxid:#x}) wrote at {stale_at:#x}, after the "
                f"hold {held_b.token.czxid:#x} wrote at {b_at:#x}"
            )
        await a.release()


async def test_held_a_released_lock_hold_cannot_write_once_its_lock_holds_again(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    await zk.create(DATA, b"", makepath=True)
    lock = Lock(zk, "/lock", "a")
    with anyio.fail_after(20):
        first = await lock.acquire()
        await _write(first, b"a1")
        await lock.release()
        await lock.acquire()
        with pytest.raises(LockLost):
            await _write(first, b"stale a1")
        await lock.release()


async def test_a_semaphore_lease_lost_with_its_session_cannot_write_once_held_again(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """The SIGSTOP-like case: the holder's session expires (a pause past the timeout), another
    process takes the lease and writes, the first process's Semaphore takes a lease again on its
    new session; a write through the hold of the expired session (a task that was still running
    with it) must be refused."""
    from aiocoord.testing import expire_session

    await zk.create(DATA, b"", makepath=True)
    async with (
        Client(zk_server.hosts, namespace=zk.namespace, session_timeout=4) as mine,
        Client(zk_server.hosts, namespace=zk.namespace) as other,
    ):
        a = Semaphore(mine, "/sem", "a", max_leases=1)
        b = Semaphore(other, "/sem", "b", max_leases=1)
        with anyio.fail_after(30):
            first = await a.acquire()
            await _write(first, b"a1")
            await expire_session(mine)
            await eventually(lambda: first.lost is not None, 10)  # LOST reached the hold
            await a.release()
            held_b = await b.acquire()
            b_at = await _write(held_b, b"b")
            await b.release()
            await mine.wait_connected()
            await a.acquire()
        with pytest.raises(LockLost):
            stale_at = await _write(first, b"stale a1")
            raise AssertionError(
                f"a hold lost with its session (token {first.token.czxid:#x}) wrote at "
                f"{stale_at:#x}, after the hold {held_b.token.czxid:#x} wrote at {b_at:#x}"
            )
        await a.release()
