"""A barrier and a double barrier on kazoo's znode layouts, so that kazoo and aiocoord processes
wait at the same barrier during a migration.

Znode layout (``kazoo.recipe.barrier``)::

    Barrier        <path>                  PERSISTENT: the barrier is up while it exists
    DoubleBarrier  <path>/<uuid hex>       EPHEMERAL, one per member, data = identifier
                   <path>/ready            PERSISTENT, made by the member that completes the count

``Barrier``: ``create()`` raises it, ``remove()`` lowers it, ``wait()`` returns once it is down
(at once when it is not up). ``wait()`` watches the node: no polling.

``DoubleBarrier(num_clients)``, kazoo's algorithm: ``enter()`` makes the member's node and
returns once ``num_clients`` members are in (the member that completes the count makes
``ready``; the others wait for it to appear). ``leave()`` deletes ``ready``, then: the lowest
member (by name) waits until every other member's node is gone, watching the highest; every
other member deletes its node and waits for the lowest to go. So nobody leaves before every
member has called ``leave()`` (or died: a member's node goes with its session).

Herd: every waiter in ``enter()`` watches ``ready`` and every non-lowest waiter in ``leave()``
watches the lowest member's node: each is woken once, when all of them must go on together (the
barrier opening is the one event they wait for). Only the lowest member in ``leave()`` is woken
more than once: once per departure of the member it watches, at most ``num_clients - 1`` times.

The member's node has kazoo's name (a uuid per ``DoubleBarrier`` object), not a protected one:
a create whose reply was lost is retried, and the ``NodeExists`` it meets is our node, adopted
when its owner is this session. So a lost reply never leaves a second node, and kazoo members
see the names they make themselves.

SUSPENDED: waits go on; requests are sent again after the reconnect, and every wait looks again
after RECONNECTED (a watch event may have been missed). LOST while waiting in ``enter()``: the
node went with the session and is made again on the new one. LOST between ``enter()`` and
``leave()``: the node is gone, so the other members may leave without this one
(``participating`` turns False; ``leave()`` then only waits for them). Cancellation (or a timeout)
while waiting in ``enter()`` or ``leave()`` deletes the member's node at once (an owed delete
when the reply is lost: done after the reconnect) and removes every watch it set: nothing of
ours stays behind to count as a member. Like kazoo's, a ``ready`` made and deleted while this
member was disconnected is not seen (a watch restored after a reconnect does not fire for a node
that no longer exists): that member waits until the next round opens, or its caller's timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from types import TracebackType

import anyio

from ..transport.client import Client
from ..transport.errors import ConnectionLoss, NodeExists, NoNode, RequestTimeout
from ..transport.paths import validate_path
from ..transport.types import EventType, SessionEvent, SessionState, WatchEvent
from ._session import RETRYABLE, Wakeup, unwatch, wait_watched, withdraw

__all__ = ["Barrier", "DoubleBarrier"]

log = logging.getLogger("aiocoord.barrier")

READY = "ready"


class Barrier:
    """A barrier at ``path`` (kazoo's ``Barrier``): up while the node exists.

    ``await barrier.create()`` raises it, ``await barrier.remove()`` lowers it; ``await
    barrier.wait()`` returns once it is down (bound it with ``anyio.fail_after``)."""

    def __init__(self, client: Client, path: str) -> None:
        validate_path(path)
        self._client = client
        self.path = path.rstrip("/") or "/"

    async def create(self) -> None:
        """Raise the barrier (and make its parents); a no-op when it is up already."""
        while True:
            try:
                await self._client.ensure_path(self.path)
                return
            except RETRYABLE as exc:  # ensure_path is idempotent: sent again
                log.info("%s: creating again after %s", self.path, exc)

    async def remove(self) -> bool:
        """Lower the barrier: True when this call removed it, False when it was not up. (After a
        lost reply the barrier is down either way; it counts as removed by this call.)"""
        lost = False
        while True:
            try:
                await self._client.delete(self.path)
                return True
            except NoNode:
                return lost
            except RETRYABLE as exc:
                lost = True
                log.info("%s: removing again after %s", self.path, exc)

    async def wait(self) -> None:
        """Return once the barrier is down (at once when it is not up). Cancellation leaves no
        watch behind."""
        client = self._client
        while True:
            try:
                woken = Wakeup()
                try:  # get, not exists: a missing node leaves no watch behind
                    await client.get(self.path, watch=woken.watch)
                except NoNode:
                    return
                await wait_watched(client, self.path, woken)
            except RETRYABLE as exc:
                log.info("%s: waiting again after %s", self.path, exc)


class DoubleBarrier:
    """A double barrier at ``path`` for ``num_clients`` members (kazoo's ``DoubleBarrier``, its
    nodes and its algorithm). ``identifier`` is the member node's data (default
    ``<fqdn>-<pid>``, as kazoo's).

    ``async with DoubleBarrier(zk, "/jobs/42", 3):`` enters (waits until 3 members are in), runs
    the block, and leaves (waits until all 3 have left); or ``await barrier.enter()`` ...
    ``await barrier.leave()``. Bound either wait with ``anyio.fail_after``: cancelled, it leaves
    no node and no watch behind. One member per object.
    """

    def __init__(
        self, client: Client, path: str, num_clients: int, identifier: str | None = None
    ) -> None:
        validate_path(path)
        if num_clients < 1:
            raise ValueError("num_clients must be at least 1")
        self._client = client
        self.path = path.rstrip("/") or "/"
        self.num_clients = num_clients
        self.identifier = identifier or f"{socket.getfqdn()}-{os.getpid()}"
        #: this member's node name (kazoo's: a uuid hex) and path
        self.node_name = uuid.uuid4().hex
        self.node = f"{self.path.rstrip('/')}/{self.node_name}"
        #: True between a completed ``enter()`` and ``leave()`` while the node lasts
        self.participating = False
        self._ready = f"{self.path.rstrip('/')}/{READY}"
        self._node_session = 0  # the session our node is (or may be) on; 0 when none
        self._wakeups = 0  # how often a wait was woken to look again (diagnostics)

    def _on_session(self, event: SessionEvent) -> None:
        if event.state in (SessionState.LOST, SessionState.CLOSED):
            self.participating = False

    async def enter(self) -> None:
        """Make this member's node and wait until ``num_clients`` members are in."""
        if self.participating:
            raise RuntimeError(f"{self.path}: this member is in the barrier already")
        try:
            await self._enter()
        except BaseException:  # cancelled, timed out or failed while waiting: no node stays
            await self._withdraw()
            raise
        self.participating = True
        self._client.add_listener(self._on_session)

    async def leave(self) -> None:
        """Wait until every member has left (this member's node deleted on the way)."""
        self._client.remove_listener(self._on_session)
        self.participating = False
        try:
            await self._leave()
        except BaseException:
            await self._withdraw()
            raise

    async def __aenter__(self) -> DoubleBarrier:
        await self.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.leave()

    async def _withdraw(self) -> None:
        session, self._node_session = self._node_session, 0
        with anyio.CancelScope(shield=True):
            await withdraw(self._client, self.node, session, log=log)

    async def _ensure_node(self) -> None:
        """Our node on this session: made (a lost reply's node adopted), or left by an earlier
        session of ours (LOST is declared by the client before the server may have expired it)
        deleted and made again."""
        client = self._client
        while self._node_session != client.session_id:
            await client.wait_connected()
            session = client.session_id
            # Shielded: a create in flight is seen to its end, so a cancellation knows whether
            # there may be a node to delete (_node_session is set before any later await).
            with anyio.CancelScope(shield=True):
                self._node_session = session
                try:
                    await client.create(
                        self.node, self.identifier.encode(), ephemeral=True, makepath=True
                    )
                    return
                except NodeExists:
                    pass  # ours from a lost reply, or an earlier session's: looked at below
                except (ConnectionLoss, RequestTimeout):
                    pass  # created or not: looked at below
            stat = await client.exists(self.node)
            if stat is None:
                self._node_session = 0  # the create was not applied: make it again
            elif stat.ephemeral_owner != session:
                log.info("%s: left by session 0x%x: replacing it", self.node, stat.ephemeral_owner)
                self._node_session = 0
                with contextlib.suppress(NoNode):
                    await client.delete(self.node)

    async def _enter(self) -> None:
        while True:
            try:
                await self._ensure_node()
                if await self._wait_ready():
                    return
            except RETRYABLE as exc:
                log.info("%s: entering again after %s", self.path, exc)

    async def _wait_ready(self) -> bool:
        """One look: True once the barrier is open (``ready`` exists, or this member completes
        the count and makes it, or ``ready`` was made while waiting); False to look again."""
        client = self._client
        woken = Wakeup()
        opened = False

        def on_ready(event: WatchEvent) -> None:
            nonlocal opened
            # made: the barrier opened, even when a fast member deletes it again (leaving)
            # before this one looks
            opened = opened or event.type is EventType.NODE_CREATED
            woken.set()

        if await client.exists(self._ready, watch=on_ready) is not None:
            await unwatch(client, self._ready, on_ready)
            return True
        try:
            members = await client.children(self.path)
        except BaseException:
            await unwatch(client, self._ready, on_ready)
            raise
        if self.node_name not in members:  # gone with a lost session: made again
            self._node_session = 0
            await unwatch(client, self._ready, on_ready)
            return False
        if sum(1 for m in members if m != READY) >= self.num_clients:
            await unwatch(client, self._ready, on_ready)
            with contextlib.suppress(NodeExists):
                await client.create(self._ready)
            return True
        await wait_watched(client, self._ready, woken, on_ready)
        self._wakeups += 1
        return opened

    async def _leave(self) -> None:
        client = self._client
        ready_deleted = False
        while True:
            try:
                await client.wait_connected()
                if not ready_deleted:
                    with contextlib.suppress(NoNode):
                        await client.delete(self._ready)
                    ready_deleted = True
                try:
                    members = await client.children(self.path)
                except NoNode:
                    return
                if self._node_session != client.session_id:
                    self._node_session = 0  # our node went with its session
                here = self._node_session != 0 and self.node_name in members
                others = sorted(m for m in members if m not in (READY, self.node_name))
                if not others:
                    await self._withdraw()
                    return
                if here and self.node_name < others[0]:
                    awaited = others[-1]  # the lowest leaves last: wait for the highest
                else:
                    if here:
                        await self._withdraw()
                    awaited = others[0]  # wait for the lowest: it goes when all have left
                woken = Wakeup()
                path = f"{self.path.rstrip('/')}/{awaited}"
                try:  # get, not exists: a missing node leaves no watch behind
                    await client.get(path, watch=woken.watch)
                except NoNode:
                    continue
                await wait_watched(client, path, woken)
                self._wakeups += 1
            except RETRYABLE as exc:
                log.info("%s: leaving again after %s", self.path, exc)
