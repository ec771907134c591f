"""Party and ShallowParty on kazoo's znode layouts: the processes taking part in something, so
that kazoo and aiocoord processes join the same party during a migration.

Znode layout (``kazoo.recipe.party``)::

    Party         <path>/<uuid hex>__party__       EPHEMERAL, data = identifier (UTF-8)
    ShallowParty  <path>/<uuid hex>-<identifier>   EPHEMERAL, no data

A ``Party`` member is any child whose name contains ``__party__``; its identifier is the node's
data. A ``ShallowParty`` member is any child; its identifier is what follows the first ``-`` of
its name (one read gives the whole party: no data to fetch, but the identifier must be a valid
node name).

``join()`` holds the member node while its block runs. SUSPENDED: nothing to do (the node lives
while the session does). LOST: the node went with the session; it is created again on the new
session, once any node left by the old one is gone. Leaving the block (or cancellation) deletes
the node at once; a delete whose reply is lost is owed and done after the reconnect.

``members()`` reads the party once; ``watch()`` is a latest-wins feed of the members (read again
after every change, RECONNECTED and LOST: it converges on what the server holds).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import anyio
import anyio.abc

from ..transport.client import Client, Watcher
from ..transport.errors import ClientClosed, NoNode
from ..transport.paths import validate_path
from ..transport.types import SessionEvent, SessionState
from ._session import RETRYABLE, Latest, hold_ephemeral, listening, pipelined

__all__ = ["Membership", "Party", "PartyFeed", "ShallowParty"]

log = logging.getLogger("aiocoord.party")


class Membership:
    """A member's place in a party (from ``join()``): its node, held while the block runs."""

    def __init__(self, client: Client, path: str, data: bytes) -> None:
        self._client = client
        #: the member node's path
        self.path = path
        self._data = data
        #: how often the node was created: once, and again after each lost session
        self.joins = 0
        self._node_session = 0  # the session known to hold the node (0: none known)
        self._losses = Latest(0)

    @property
    def joined(self) -> bool:
        """Whether the node is known to be held by the current session."""
        return self._node_session != 0 and self._node_session == self._client.session_id

    def _on_session(self, event: SessionEvent) -> None:
        if event.state is SessionState.LOST:
            self._losses.publish(self._losses.value + 1)

    async def _hold(self) -> None:
        while True:
            try:
                stat = await hold_ephemeral(self._client, self.path, self._data, log=log)
            except RETRYABLE as exc:
                log.info("joining as %s again after %s", self.path, exc)
                continue
            self._node_session = stat.ephemeral_owner
            self.joins += 1
            log.info("joined as %s", self.path)
            return

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        losses = 0
        with listening(self._client, self._on_session), contextlib.suppress(ClientClosed):
            await self._hold()
            task_status.started()
            while True:
                losses = await self._losses.wait_newer(losses)
                log.warning("session lost: joining as %s again", self.path)
                await self._hold()

    async def _leave(self) -> None:
        held, self._node_session = self._node_session, 0
        client = self._client
        with anyio.move_on_after(client.negotiated_timeout or 5):
            try:
                # not known to be ours (a create cut short, a re-join after a lost session
                # waiting out the old node): delete it only if this session owns it
                ours = held != 0 and held == client.session_id
                if await client.delete_ephemeral(self.path, only_ours=not ours):
                    log.info("left: deleted %s", self.path)
                else:
                    log.warning("leaving: deleting %s: the reply was lost: deleted after the "
                                "reconnect, or with the session", self.path)  # fmt: skip
            except ClientClosed:
                pass  # the node went with the session
            except Exception as exc:  # leaving must not fail the caller's exit
                log.warning("could not delete %s (%s): it goes with the session", self.path, exc)


class PartyFeed:
    """The members of a party as they change (from ``Party.watch()``): ``async for members in
    feed`` yields the sorted identifiers, the current ones first, then each newer membership
    (latest wins: a burst of changes yields once)."""

    def __init__(self, party: Party) -> None:
        self._party = party
        self._latest: Latest[tuple[tuple[str, str], ...] | None] = Latest(None)
        self._asked = Latest(0)

    @property
    def members(self) -> list[str]:
        """The members last read (no I/O)."""
        return _identifiers(self._latest.value or ())

    def __aiter__(self) -> AsyncIterator[list[str]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[list[str]]:
        seen = None
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                seen = await self._latest.wait_newer(seen)
                assert seen is not None
                yield _identifiers(seen)

    def _ask(self, *_: object) -> None:
        self._asked.publish(self._asked.value + 1)

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        client = self._party._client
        asked = 0
        started = False
        with contextlib.suppress(ClientClosed):
            while True:
                asked = self._asked.value
                try:
                    await client.wait_connected()
                    snapshot = await self._party._snapshot(watch=self._ask)
                except RETRYABLE as exc:
                    log.debug("%s: reading the party again after %s", self._party.path, exc)
                    await anyio.sleep(0.05)
                    continue
                self._latest.publish(snapshot)
                if not started:
                    started = True
                    task_status.started()
                await self._asked.wait_newer(asked)

    def _close(self) -> None:
        self._latest.close()


def _identifiers(snapshot: tuple[tuple[str, str], ...]) -> list[str]:
    return sorted(identifier for _, identifier in snapshot)


class Party:
    """The members of the party at ``path`` (kazoo's ``Party``): each holds a node whose data is
    its ``identifier``.

    ``async with party.join():`` takes part while the block runs; ``await party.members()``;
    ``async with party.watch() as feed: async for members in feed:``.
    """

    #: the part of a child's name that makes it a member (None: every child is one)
    marker: ClassVar[str | None] = "__party__"

    def __init__(self, client: Client, path: str, identifier: str | None = None) -> None:
        validate_path(path)
        self._client = client
        self.path = path.rstrip("/") or "/"
        self.identifier = identifier or ""
        #: this member's node name
        self.name = self._node_name()
        validate_path(f"{self.path.rstrip('/')}/{self.name}")

    def _node_name(self) -> str:
        return f"{uuid.uuid4().hex}__party__"

    def _data(self) -> bytes:
        return self.identifier.encode()

    def _is_member(self, name: str) -> bool:
        return self.marker is None or self.marker in name

    async def _identify(self, names: list[str]) -> list[tuple[str, str]]:
        """(name, identifier) of each member node among ``names`` (gone ones left out)."""
        base = self.path.rstrip("/")

        async def read(name: str) -> tuple[str, str] | None:
            try:
                data, _ = await self._client.get(f"{base}/{name}")
            except NoNode:
                return None  # left meanwhile
            return name, data.decode(errors="replace")

        found = await pipelined([functools.partial(read, name) for name in names])
        return [one for one in found if one is not None]

    async def _snapshot(self, watch: Watcher | None = None) -> tuple[tuple[str, str], ...]:
        """The member nodes and their identifiers, sorted by node name; ``watch`` (a watcher)
        fires when the children change."""
        try:
            names = await self._client.children(self.path, watch=watch)
        except NoNode:
            # no party yet: watch for its creation (the children watch needs the node)
            if watch is not None:
                await self._client.exists(self.path, watch=watch)
            return ()
        members = [name for name in names if self._is_member(name)]
        return tuple(sorted(await self._identify(members)))

    async def members(self) -> list[str]:
        """The identifiers of the members, sorted (one read; no watch left)."""
        return _identifiers(await self._snapshot())

    @contextlib.asynccontextmanager
    async def join(self) -> AsyncIterator[Membership]:
        """Take part while the block runs (again after a lost session); leave at its end."""
        membership = Membership(self._client, f"{self.path.rstrip('/')}/{self.name}", self._data())
        async with anyio.create_task_group() as tg:
            try:
                await tg.start(membership._run)
                yield membership
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await membership._leave()

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[PartyFeed]:
        """A feed of the members, read before the block starts."""
        feed = PartyFeed(self)
        async with anyio.create_task_group() as tg:
            await tg.start(feed._run)
            try:
                yield feed
            finally:
                tg.cancel_scope.cancel()
                feed._close()


class ShallowParty(Party):
    """The members of the party at ``path`` (kazoo's ``ShallowParty``): the ``identifier`` is in
    the node's name, so reading the party is one request. The identifier must fit in a node
    name (no ``/``)."""

    marker = None

    def _node_name(self) -> str:
        if "/" in self.identifier:
            raise ValueError(
                f"a shallow party identifier is part of a node name: {self.identifier!r}"
            )
        return f"{uuid.uuid4().hex}-{self.identifier}"

    def _data(self) -> bytes:
        return b""

    async def _identify(self, names: list[str]) -> list[tuple[str, str]]:
        return [(name, name[name.find("-") + 1 :]) for name in names]
