"""Locks and a semaphore on kazoo's znode layouts, so that kazoo and aiocoord processes contend
for the same lock during a migration.

Znode layout (``kazoo.recipe.lock``)::

    Lock, WriteLock  <path>/_c_<uuid>-__lock__<seq>    EPHEMERAL_SEQUENTIAL, data = identifier
    ReadLock         <path>/_c_<uuid>-__rlock__<seq>   (kazoo names its own <uuid hex>__lock__<seq>)
    Semaphore        <path>                            data = max_leases, in decimal
                     <path>/<uuid hex>                 EPHEMERAL, one per lease held
                     <path>-__lock__/...               a Lock, held while taking a lease

Contenders are recognised, as kazoo does, by the suffix ``__lock__<seq>`` or ``__rlock__<seq>``
(whatever comes before it), and ordered by the sequence compared as text. A contender holds the
lock once no conflicting node is ahead of it: for ``Lock`` and ``WriteLock`` any ``__lock__`` node
and (``WriteLock``) any ``__rlock__`` node; for ``ReadLock`` only ``__lock__`` nodes (readers
share). No herd: a waiter watches only the nearest conflicting node ahead of it, so a release
wakes one waiter (a writer's release wakes the readers queued right behind it, which all proceed).
The lock's node is made with a protected create: a reply lost with the connection never leaves a
second node of ours.

A held lock is a ``LockHold``: its fencing token is the node's czxid, ``hold.guard(ops)`` applies
``ops`` only while the node exists as written (else ``LockLost``). A semaphore lease is held the
same way, on its lease node. ``Semaphore`` keeps kazoo's check that every user agrees on
``max_leases`` (``MaxLeasesMismatch``).

SUSPENDED: the hold ends (unless ``tolerate_suspended``): this process cannot know whether it
still holds the lock; its node is deleted on release, or once the session is back. LOST: the hold
ends, the node went with the session. Under ``async with``, the block is cancelled when the hold
ends and ``LockLost`` is raised. Cancellation while waiting, or a timeout, deletes the node at
once (an owed delete when the reply is lost), so no phantom contender stays ahead of the others.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import ClassVar

import anyio

from ..transport.client import Client
from ..transport.errors import CoordError, MultiFailed, NodeExists, NoNode
from ..transport.paths import validate_path
from ..transport.types import Op, SessionEvent, SessionState
from ._session import RETRYABLE, Fenced, Wakeup, unwatch, wait_watched, withdraw

__all__ = [
    "Lock",
    "LockHold",
    "LockLost",
    "MaxLeasesMismatch",
    "ReadLock",
    "Semaphore",
    "WriteLock",
    "predecessor",
]

log = logging.getLogger("aiocoord.lock")


class LockLost(CoordError):
    """A held lock (or semaphore lease) ended without ``release()``: the session suspended or
    lost, the node deleted; or a guarded write found the node gone."""


class MaxLeasesMismatch(CoordError, ValueError):
    """The semaphore node stores another ``max_leases`` than this ``Semaphore`` was given
    (kazoo raises ``ValueError`` there: so is this). Delete the node to change the leases."""


class LockHold(Fenced):
    """One hold of a lock or a semaphore lease: its fencing token (the node's czxid) and
    ``guard(ops)``, raising ``LockLost`` once the node is gone or changed."""

    lost_error = LockLost
    holding = "lock"
    holder = "lock holder"
    _log = log


def _contender_pattern(names: Iterable[str]) -> re.Pattern[str]:
    return re.compile(r"(?:{})(-?\d{{10}})$".format("|".join(sorted(set(names)))))


def predecessor(
    name: str, children: Sequence[str], node_name: str, conflicts: Iterable[str]
) -> str | None:
    """The child that ``name`` (one of ``children``, ending ``<node_name><seq>``) waits for: the
    nearest one ahead of it whose name ends ``<conflict><seq>``, or None when it holds the lock.
    Sequences compare as text, as kazoo's ``Lock._get_predecessor`` compares them."""
    own = _contender_pattern([node_name]).search(name)
    if own is None:
        raise ValueError(f"{name!r} is not a {node_name} contender")
    pattern = _contender_pattern(conflicts)
    ahead = [
        (match.group(1), child)
        for child in children
        if (match := pattern.search(child)) is not None and match.group(1) < own.group(1)
    ]
    return max(ahead)[1] if ahead else None


class _Holder:
    """What a lock and a semaphore share: ``acquire``/``release``, ``async with``, the session
    listener that ends the hold, and withdrawing the node on cancellation."""

    def __init__(
        self, client: Client, path: str, identifier: str | None, tolerate_suspended: bool
    ) -> None:
        validate_path(path)
        self._client = client
        self.path = path.rstrip("/") or "/"
        self.identifier = identifier or ""
        self.tolerate_suspended = tolerate_suspended
        self._hold: LockHold | None = None
        self._busy = False
        self._entered: AbstractAsyncContextManager[LockHold] | None = None
        self._node: str | None = None  # our node, while we have one
        self._node_session = 0
        self._wakeups = 0  # how often a waiter was woken to look again (diagnostics)

    @property
    def held(self) -> bool:
        """Whether this process holds it now (False once the hold has ended)."""
        return self._hold is not None and self._hold.lost is None

    async def _wait_hold(self) -> LockHold:  # pragma: no cover - abstract
        raise NotImplementedError

    # timeout= as kazoo's acquire(timeout=), for code moving from it (the same as fail_after)
    async def acquire(self, timeout: float | None = None) -> LockHold:  # noqa: ASYNC109
        """Wait until held (at most ``timeout`` seconds: ``TimeoutError``); return the hold.
        Not re-entrant: one holder or waiter per object (``RuntimeError``)."""
        if self._busy:
            raise RuntimeError(f"{self.path}: already held or being acquired by this object")
        self._busy = True
        try:
            with anyio.fail_after(timeout):
                hold = await self._wait_hold()
        except BaseException:  # cancelled, timed out or failed while waiting: no node stays
            with anyio.CancelScope(shield=True):
                await self._withdraw()
            self._busy = False
            raise
        self._hold = hold
        self._client.add_listener(self._on_session)
        if not self._client.state.live:  # changed before the listener was there: not missed
            self._on_session(SessionEvent(self._client.state, self._client.session_id, None))
        return hold

    def _on_session(self, event: SessionEvent) -> None:
        hold = self._hold
        if hold is None:
            return
        if event.state in (SessionState.LOST, SessionState.CLOSED):
            self._node_session = 0  # the node went with the session
            hold._end(f"session {event.state.value}")
        elif event.state is SessionState.SUSPENDED and not self.tolerate_suspended:
            hold._end("session suspended")

    async def release(self) -> None:
        """Release at once (the node is deleted; owed to the session when the reply is lost).
        A no-op when not held."""
        hold, self._hold = self._hold, None
        if hold is not None:
            self._client.remove_listener(self._on_session)
            hold._release()  # its watch fires on the delete: no round trip to remove it first
        with anyio.CancelScope(shield=True):
            await self._withdraw()
        self._busy = False

    async def _withdraw(self) -> None:
        node, self._node = self._node, None
        session, self._node_session = self._node_session, 0
        await withdraw(self._client, node, session, log=log)

    async def _take(self, node: str) -> LockHold | None:
        hold = LockHold(self._client, node, 0, 0)
        if await hold._watch_owned():
            return hold
        self._node = None
        return None

    @contextlib.asynccontextmanager
    async def _holding(self) -> AsyncIterator[LockHold]:
        hold = await self.acquire()
        try:
            with anyio.CancelScope() as scope:
                hold._scope = scope
                if hold.lost is not None:
                    scope.cancel()
                yield hold
        finally:
            lost = hold.lost
            await self.release()
        if lost is not None:
            raise LockLost(lost)

    async def __aenter__(self) -> LockHold:
        """Acquire; the block runs while held and is cancelled when the hold ends (then
        ``LockLost`` is raised). Leaving it releases at once."""
        entered = self._holding()
        hold = await entered.__aenter__()
        self._entered = entered
        return hold

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        entered, self._entered = self._entered, None
        assert entered is not None
        return await entered.__aexit__(exc_type, exc, tb)


class Lock(_Holder):
    """An exclusive lock at ``path`` (kazoo's ``Lock``); ``identifier`` is its node's data, what
    ``contenders()`` shows.

    ``async with Lock(zk, "/locks/db") as hold:`` or ``hold = await lock.acquire(timeout=5)``
    ... ``await lock.release()``. With ``tolerate_suspended`` the hold lasts through SUSPENDED
    and ends only on LOST (guard what you write).
    """

    #: the name of this kind of contender's nodes, and the kinds ahead of it it waits for
    node_name: ClassVar[str] = "__lock__"
    conflicts: ClassVar[tuple[str, ...]] = ("__lock__",)

    def __init__(
        self,
        client: Client,
        path: str,
        identifier: str | None = None,
        *,
        tolerate_suspended: bool = False,
    ) -> None:
        super().__init__(client, path, identifier, tolerate_suspended)

    @property
    def node(self) -> str | None:
        """Our contender node, while waiting or holding."""
        return self._node

    async def contenders(self) -> list[str]:
        """The identifiers of every contender of this lock (readers and writers of a read/write
        lock), first in line first; a contender without one shows as ``""``."""
        try:
            names = await self._client.children(self.path)
        except NoNode:
            return []
        pattern = _contender_pattern(("__lock__", "__rlock__", self.node_name))
        ordered = sorted((m.group(1), n) for n in names if (m := pattern.search(n)) is not None)
        out = []
        for _, name in ordered:
            with contextlib.suppress(NoNode):
                data, _ = await self._client.get(f"{self.path}/{name}")
                out.append(data.decode(errors="replace"))
        return out

    async def _ensure_node(self) -> str:
        client = self._client
        if self._node is not None and self._node_session == client.session_id:
            return self._node
        self._node = None
        # Shielded: a create in flight is seen to its end, so a cancellation never leaves a node
        # we do not know to delete. Protected: a lost reply never leaves a second node.
        with anyio.CancelScope(shield=True):
            node = await client.create(
                f"{self.path}/{self.node_name}",
                self.identifier.encode(),
                ephemeral=True,
                sequential=True,
                makepath=True,
                protected=True,
            )
            self._node, self._node_session = node, client.session_id
        return node

    async def _wait_hold(self) -> LockHold:
        client = self._client
        while True:
            try:
                await client.wait_connected()
                node = await self._ensure_node()
                name = node.rsplit("/", 1)[1]
                try:
                    children = await client.children(self.path)
                except NoNode:
                    children = []  # the lock's path deleted (our node with it): as kazoo does,
                if name not in children:  # contend again on a new one
                    self._node = None  # deleted under us (or its session lost): create again
                    continue
                ahead = predecessor(name, children, self.node_name, self.conflicts)
                if ahead is None:
                    hold = await self._take(node)
                    if hold is not None:
                        return hold
                    continue
                await self._wait_gone(f"{self.path}/{ahead}")
            except RETRYABLE as exc:
                log.info("%s: contending again after %s", self.path, exc)

    async def _wait_gone(self, path: str) -> None:
        """Wait until ``path`` changes (is deleted, mostly) or the session is lost or back; no
        watch is left behind, cancelled too."""
        woken = Wakeup()
        try:
            await self._client.get(path, watch=woken.watch)  # (a NoNode reply leaves no watch)
        except NoNode:
            return
        await wait_watched(self._client, path, woken)
        self._wakeups += 1


class WriteLock(Lock):
    """The write side of kazoo's read/write lock at ``path``: excludes readers and writers."""

    node_name = "__lock__"
    conflicts = ("__lock__", "__rlock__")


class ReadLock(Lock):
    """The read side of kazoo's read/write lock at ``path``: shared with other readers, waits
    for the writers ahead of it."""

    node_name = "__rlock__"
    conflicts = ("__lock__",)


class Semaphore(_Holder):
    """At most ``max_leases`` holders at ``path`` (kazoo's ``Semaphore``, its layout and its
    ``max_leases`` check: ``MaxLeasesMismatch``). Only the holder of the lock at
    ``<path>-__lock__`` takes a lease, and only it watches the leases: no herd."""

    def __init__(
        self,
        client: Client,
        path: str,
        identifier: str | None = None,
        *,
        max_leases: int = 1,
        tolerate_suspended: bool = False,
    ) -> None:
        if max_leases < 1:
            raise ValueError("max_leases must be at least 1")
        super().__init__(client, path, identifier, tolerate_suspended)
        self.max_leases = max_leases
        self._lease = ""  # this acquire's lease node: a new name each time (fencing)

    async def lease_holders(self) -> list[str]:
        """The identifiers of the lease holders, in no order."""
        try:
            names = await self._client.children(self.path)
        except NoNode:
            return []
        out = []
        for name in names:
            with contextlib.suppress(NoNode):
                out.append((await self._client.get(f"{self.path}/{name}"))[0].decode())
        return out

    async def _check_max_leases(self) -> None:
        try:
            await self._client.create(self.path, str(self.max_leases).encode(), makepath=True)
            return
        except NodeExists:
            pass
        data, _ = await self._client.get(self.path)
        try:
            stored = int(data.decode())
        except ValueError:
            return  # not a number: the node's data serves something else (kazoo ignores it)
        if stored != self.max_leases:
            raise MaxLeasesMismatch(
                f"{self.path}: inconsistent max leases: {stored}, expected: {self.max_leases}"
            )

    async def _wait_hold(self) -> LockHold:
        client = self._client
        # A new name for every hold: an ended hold's guard() checks its node at version 0, which
        # a lease made again under the same name would pass. Kept through this acquire's
        # rounds: a lease whose create reply was lost is found under it.
        self._lease = f"{self.path}/{uuid.uuid4().hex}"
        while True:
            try:
                await client.wait_connected()
                await self._check_max_leases()
                gate = Lock(client, f"{self.path}-__lock__", self.identifier)
                async with gate as gate_hold:
                    hold = await self._take_lease(gate, gate_hold)
                if hold is not None:
                    return hold
            except (*RETRYABLE, LockLost) as exc:
                log.info("%s: contending again after %s", self.path, exc)

    async def _take_lease(self, gate: Lock, gate_hold: LockHold) -> LockHold | None:
        client = self._client
        name = self._lease.rsplit("/", 1)[1]
        while gate.held:
            changed = Wakeup()
            leases = await client.children(self.path, watch=changed.watch)
            if name in leases:
                # ours: made in an earlier round of this session, while it held the gate (its
                # reply lost), so counted by every holder since: take it (_take checks the
                # owner). Another session's (an expired one of ours): it counts until it goes.
                hold = await self._take(self._lease)
                if hold is not None:
                    await unwatch(client, self.path, changed.watch)
                    return hold
            elif len(leases) < self.max_leases:
                await unwatch(client, self.path, changed.watch)
                if await self._make_lease(gate_hold):
                    return await self._take(self._lease)
                continue  # there already: the next look tells whose
            await wait_watched(client, self.path, changed)  # (no watch left when cancelled)
            self._wakeups += 1
        return None

    async def _make_lease(self, gate_hold: LockHold) -> bool:
        """Create our lease only while our gate node exists as written (``LockLost`` when it is
        gone), never on a session that came after the gate's: a blip and a new session between
        counting the leases and creating ours must not make a lease nobody counted."""
        client = self._client
        # Shielded: a create in flight is seen to its end. Recorded first: a lease made by a
        # request whose reply is lost is one we know to delete.
        with anyio.CancelScope(shield=True):
            self._node, self._node_session = self._lease, client.session_id
            op = Op.create(self._lease, self.identifier.encode(), ephemeral=True)
            try:
                await gate_hold.guard([op])
            except MultiFailed as exc:
                if not isinstance(exc.cause, NodeExists):
                    raise
                return False
        return True
