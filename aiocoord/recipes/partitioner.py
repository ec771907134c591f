"""SetPartitioner on kazoo's znode layout: a set of items divided among the members of a party,
each item held by one member at a time, divided again when the party changes. kazoo and aiocoord
members of the same path divide the set the same way during a migration.

Znode layout (``kazoo.recipe.partitioner``)::

    <path>/party/<uuid hex>-<identifier>          a ShallowParty member, EPHEMERAL
    <path>/locks/<item>/_c_<uuid>-__lock__<seq>   a Lock per item, EPHEMERAL_SEQUENTIAL

Division (kazoo's ``_partitioner``): the items sorted, the members' identifiers sorted; the member
at index ``i`` of ``n`` takes ``items[i::n]``. Identifiers must differ (the default is
``<fqdn>-<pid>``, as kazoo's).

Protocol, the same as kazoo's: once the party has not changed for ``time_boundary`` seconds, a
member takes the lock of each of its items; when the party changes while it waits, it gives up
the locks it took and starts again. Holding all of them, it hands the ``Allocation`` to its user.
When the party changes again, the allocation is revoked: the user's block under ``with
allocation:`` is cancelled, and only once the user has left it (or asked for the next
allocation) are the locks released, before anything new is taken. So an item is never held by two
members at once: not by their locks, and not by their users' work.

SUSPENDED: the allocation is revoked (this member cannot know it still holds its locks) and the
locks released (their deletes owed until the session is back); a new allocation is made once
connected (an allocation of no items holds nothing: it stands). LOST: the same; the locks and
the party node went with the session, the member joins again on the new session.

The user's work on an allocation may outlive its locks by a scheduling step, or longer when not
run under ``with allocation:``: writes that must not happen then go through
``allocation.holds[item].guard(ops)`` (refused with ``LockLost`` once that lock's node is gone,
e.g. on a member paused past its session timeout). Cancellation while allocating withdraws every
lock node at once; leaving the ``async with`` releases everything and leaves the party.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import anyio
import anyio.abc

from ..transport.client import Client
from ..transport.paths import validate_path
from ._session import RETRYABLE, Latest, Wakeup
from .lock import Lock, LockHold
from .party import ShallowParty

__all__ = ["Allocation", "SetPartitioner", "partition"]

log = logging.getLogger("aiocoord.partitioner")

#: (identifier, members' identifiers, items) -> this member's items
PartitionFunc = Callable[[str, Sequence[str], Sequence[str]], Sequence[str]]


def partition(identifier: str, members: Sequence[str], items: Sequence[str]) -> list[str]:
    """``identifier``'s share of ``items`` among ``members`` (kazoo's division: the items and the
    members sorted; the member at index ``i`` of ``n`` takes ``items[i::n]``)."""
    workers = sorted(members)
    return sorted(items)[workers.index(identifier) :: len(workers)]


class Allocation:
    """The items a member holds, from one division of the set: ``items``, their lock ``holds``
    (``holds[item].guard(ops)`` writes only while that lock is held) and the ``members`` the
    set was divided among.

    ``with allocation:`` runs the work on it: the block is cancelled once the allocation is
    revoked (the party changed, the session suspended or lost, the partitioner closed), and its
    items are released only once the block is left (or the next allocation asked for)."""

    def __init__(
        self, items: Sequence[str], holds: Mapping[str, LockHold], members: Sequence[str]
    ) -> None:
        self.items = tuple(items)
        self.holds = dict(holds)
        self.members = tuple(members)
        #: why the allocation was revoked (None while it stands)
        self.revoked: str | None = None
        self._scope = anyio.CancelScope()
        self._revoked = anyio.Event()
        self._taken = False  # handed to the user
        self._done = anyio.Event()  # the user is done with it (or never took it)

    def __repr__(self) -> str:
        return f"Allocation(items={self.items!r}, revoked={self.revoked!r})"

    def __enter__(self) -> Allocation:
        self._scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return self._scope.__exit__(exc_type, exc, tb)
        finally:
            self._done.set()

    async def wait_revoked(self) -> str:
        """Wait until the allocation is revoked; return why."""
        await self._revoked.wait()
        assert self.revoked is not None
        return self.revoked

    def _revoke(self, reason: str) -> None:
        if self.revoked is not None:
            return
        self.revoked = reason
        log.info("allocation of %s revoked: %s", list(self.items), reason)
        self._scope.cancel()
        self._revoked.set()
        if not self._taken:
            self._done.set()


class SetPartitioner:
    """Divides ``items`` among the members at ``path`` (kazoo's ``SetPartitioner``)::

        async with SetPartitioner(zk, "/work", queues, "worker-1") as part:
            async for allocation in part:
                with allocation:  # cancelled when revoked
                    await consume(allocation.items)
                    await anyio.sleep_forever()

    ``time_boundary``: how long (seconds) the party must stay unchanged before a division, as
    kazoo's. ``partition_func(identifier, members, items)`` replaces the division (every member
    must use the same one). An allocation stands until revoked; a user that leaves the loop
    keeps its items until it asks for the next allocation or leaves the ``async with``.
    """

    def __init__(
        self,
        client: Client,
        path: str,
        items: Iterable[str],
        identifier: str | None = None,
        *,
        partition_func: PartitionFunc | None = None,
        time_boundary: float = 30.0,
    ) -> None:
        validate_path(path)
        if not time_boundary >= 0:
            raise ValueError(f"time_boundary must be >= 0, not {time_boundary}")
        self._client = client
        self.path = path.rstrip("/") or "/"
        base = self.path.rstrip("/")
        self.items = tuple(items)
        for item in self.items:
            if not isinstance(item, str) or not item or "/" in item:
                raise ValueError(f"an item is a lock's node name: {item!r}")
            validate_path(f"{base}/locks/{item}")
        self.identifier = identifier or f"{socket.getfqdn()}-{os.getpid()}"
        self.time_boundary = time_boundary
        self._partition = partition_func or partition
        self._lock_path = f"{base}/locks"
        self._party = ShallowParty(client, f"{base}/party", self.identifier)
        self._latest: Latest[Allocation | None] = Latest(None)
        self._taken: Allocation | None = None
        self._locks: list[Lock] = []
        self._entered: AbstractAsyncContextManager[SetPartitioner] | None = None
        #: how many allocations were handed out (diagnostics)
        self.allocations = 0

    @property
    def allocation(self) -> Allocation | None:
        """The standing allocation, if any (no I/O)."""
        current = self._latest.value
        return current if current is not None and current.revoked is None else None

    # -- the user's side -----------------------------------------------------------------------
    def __aiter__(self) -> SetPartitioner:
        return self

    async def __anext__(self) -> Allocation:
        """The next allocation (done with the one before: its items may now be released)."""
        seen = self._taken
        if seen is not None:
            seen._done.set()
        while True:
            try:
                latest = await self._latest.wait_newer(seen)
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            assert latest is not None
            if latest.revoked is None:
                latest._taken = True
                self._taken = latest
                return latest
            latest._done.set()  # revoked before anyone took it
            seen = latest

    async def __aenter__(self) -> SetPartitioner:
        """Join the party (the first allocation follows, by iterating)."""
        entered = self._running()
        await entered.__aenter__()
        self._entered = entered
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        entered, self._entered = self._entered, None
        assert entered is not None
        return await entered.__aexit__(exc_type, exc, tb)

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[SetPartitioner]:
        async with anyio.create_task_group() as tg:
            await tg.start(self._run)
            try:
                yield self
            finally:
                self._latest.close()
                tg.cancel_scope.cancel()

    # -- the member's side ---------------------------------------------------------------------
    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with self._party.join():
            task_status.started()
            while True:
                await self._allocate()

    async def _allocate(self) -> None:
        """One round: settle, divide, take the locks, hand out the allocation, revoke it on a
        change, release."""
        allocation = None
        try:
            members, changed = await self._settle()
            items = list(self._partition(self.identifier, members, self.items))
            holds = await self._acquire(items, changed)
            if holds is None:
                log.info("%s: the party changed while allocating: allocating again", self.path)
                return
            allocation = Allocation(items, holds, members)
            self.allocations += 1
            self._latest.publish(allocation)
            log.info("%s: %s holds %s", self.path, self.identifier, items)
            allocation._revoke(await self._wait_change(holds, changed))
            # the user's work on the items ends before their locks are released: no other
            # member takes an item while this one still works on it
            await allocation._done.wait()
        except RETRYABLE as exc:
            log.info("%s: allocating again after %s", self.path, exc)
        finally:
            if allocation is not None:
                allocation._revoke("partitioner closed")
            with anyio.CancelScope(shield=True):
                await self._release()

    async def _settle(self) -> tuple[list[str], Wakeup]:
        """The members, once the party (with us in it) has not changed for ``time_boundary``;
        and the wakeup that fires on the next change."""
        client = self._client
        while True:
            await client.wait_connected()
            changed = Wakeup()  # (a lost session fires it too: it ends every watch)
            snapshot = await self._party._snapshot(watch=changed.watch)
            names = [name for name, _ in snapshot]
            if self._party.name in names:
                with anyio.move_on_after(self.time_boundary):
                    await changed.wait()
            else:  # not (again) a member yet: our join changes the party
                await changed.wait()
            if not changed.is_set():
                return [identifier for _, identifier in snapshot], changed

    async def _acquire(self, items: Sequence[str], changed: Wakeup) -> dict[str, LockHold] | None:
        """Take the lock of every item (at once); None when the party changed first."""
        base, me = self._lock_path, self.identifier
        locks = {item: Lock(self._client, f"{base}/{item}", me) for item in items}
        self._locks = list(locks.values())
        holds: dict[str, LockHold] = {}

        async def take(item: str, lock: Lock) -> None:
            holds[item] = await lock.acquire()

        async with anyio.create_task_group() as tg:

            async def abort_on_change() -> None:
                await changed.wait()
                tg.cancel_scope.cancel()  # each waiting lock withdraws its node

            tg.start_soon(abort_on_change)
            async with anyio.create_task_group() as taking:
                for item, lock in locks.items():
                    taking.start_soon(take, item, lock)
            tg.cancel_scope.cancel()
        if changed.is_set():
            return None
        return {item: holds[item] for item in items}

    async def _wait_change(self, holds: Mapping[str, LockHold], changed: Wakeup) -> str:
        """Why the allocation ends: the party changed, or a hold ended (the session suspended or
        lost, a lock's node deleted)."""
        with anyio.CancelScope() as scope:
            for hold in holds.values():
                hold._scope = scope  # a hold that ends (its node gone) ends the wait
                if hold.lost is not None:
                    scope.cancel()
            await changed.wait()
        lost = [hold.lost for hold in holds.values() if hold.lost is not None]
        return f"lock lost: {lost[0]}" if lost and not changed.is_set() else "the party changed"

    async def _release(self) -> None:
        locks, self._locks = self._locks, []
        async with anyio.create_task_group() as tg:
            for lock in locks:
                tg.start_soon(lock.release)
