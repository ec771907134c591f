"""Leader election: one (or N) leaders among many processes, with fencing.

Znode layout (shared with kazoo/zkpython scripts)::

    <path>/<prefix><10-digit sequence>    EPHEMERAL_SEQUENTIAL, data = the candidate's identity

Candidates sort by the numeric 10-digit suffix (any prefix), and the ``leaders`` lowest lead.
No herd: a waiting candidate at rank r > N watches only its predecessor; the first waiter (rank N)
watches the N leaders; a candidate promoted while N > 1 rewrites its own node so that its
successor wakes and moves up. Each change wakes one process.

A leader checks that its node's ephemeralOwner is its own session. Its fencing token is the
node's czxid; ``Term.guard(ops)`` runs ``ops`` in a multi() that first checks the node still
exists as written, so a deposed or paused leader's writes fail (``LeadershipLost``).

SUSPENDED: the leader's body is cancelled (unless ``tolerate_suspended``): it cannot know whether
it still leads. Its candidacy stays, so under ``run()`` it leads again at once after RECONNECTED
if nobody else could have taken over. LOST: the body is cancelled; the candidacy is gone with the
session and is re-created on the new one. Cancellation from outside, or leaving ``lead()``,
resigns: the node is deleted at once so the successor takes over without a session timeout.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.abc

from ..transport.client import Client
from ..transport.errors import (
    ConnectionLoss,
    CoordError,
    NodeExists,
    NoNode,
    RequestTimeout,
    SessionExpired,
)
from ..transport.paths import validate_path
from ..transport.types import SessionEvent, SessionState
from ._session import Fenced, FencingToken, Wakeup, listening, wait_watched, withdraw

__all__ = ["Candidate", "Election", "FencingToken", "LeadershipLost", "Term"]

log = logging.getLogger("aiocoord.election")

T = TypeVar("T")
_SEQ = re.compile(r"(\d{10})$")


class LeadershipLost(CoordError):
    """Leadership ended without this process choosing to resign (session suspended or lost, the
    candidate node deleted), or a guarded write found the leader node gone."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One candidate node of an election, as an observer sees it."""

    path: str
    sequence: int
    identity: str
    rank: int


def _sequence(name: str) -> int | None:
    match = _SEQ.search(name)
    return int(match.group(1)) if match else None


def _ranked(children: Sequence[str]) -> list[str]:
    """Candidate names in leadership order: by the numeric suffix, whatever the prefix."""
    named = [(seq, name) for name in children if (seq := _sequence(name)) is not None]
    return [name for _, name in sorted(named)]


class Term(Fenced):
    """One term of leadership, given by ``Election.lead()``: its fencing token, and ``guard(ops)``
    (raising ``LeadershipLost`` once the leader node is gone or changed)."""

    lost_error = LeadershipLost
    holding = "leadership"
    holder = "leader"
    _log = log

    def __init__(self, client: Client, path: str, czxid: int, version: int, rank: int) -> None:
        super().__init__(client, path, czxid, version)
        self.rank = rank


class Election:
    """Contend for leadership at ``path``; ``leaders`` candidates lead at once.

    ``identity`` is stored in the candidate node (default: the client's session id). With
    ``tolerate_suspended`` a leader keeps leading through SUSPENDED and stops only on LOST
    (use it only when a short overlap of two leaders is acceptable or writes are guarded).
    """

    def __init__(
        self,
        client: Client,
        path: str,
        *,
        leaders: int = 1,
        identity: str | None = None,
        prefix: str = "worker",
        tolerate_suspended: bool = False,
    ) -> None:
        validate_path(path)
        if leaders < 1:
            raise ValueError("leaders must be at least 1")
        if "/" in prefix or not prefix:
            raise ValueError(f"bad candidate prefix {prefix!r}")
        self._client = client
        self.path = path.rstrip("/") or "/"
        self.leaders = leaders
        self._identity = identity
        self.prefix = prefix
        self.tolerate_suspended = tolerate_suspended
        self._node: str | None = None  # our candidate node, while we have one
        self._node_session = 0
        self._wakeups = 0  # how often this candidate was woken to re-check (diagnostics)

    @property
    def identity(self) -> str:
        return self._identity or f"0x{self._client.session_id:x}"

    @property
    def candidate_path(self) -> str | None:
        return self._node

    # -- observing -------------------------------------------------------------------------
    async def candidates(self) -> list[Candidate]:
        """Every candidate in leadership order (the first ``leaders`` lead)."""
        try:
            names = _ranked(await self._client.children(self.path))
        except NoNode:
            return []
        out = []
        for rank, name in enumerate(names):
            full = f"{self.path}/{name}"
            try:
                data, _ = await self._client.get(full)
            except NoNode:
                continue
            out.append(Candidate(full, _sequence(name) or 0, data.decode(errors="replace"), rank))
        return [Candidate(c.path, c.sequence, c.identity, i) for i, c in enumerate(out)]

    async def current_leaders(self) -> list[Candidate]:
        """Who leads now."""
        return (await self.candidates())[: self.leaders]

    @contextlib.asynccontextmanager
    async def watch_leaders(self) -> AsyncIterator[AsyncIterator[list[Candidate]]]:
        """``async with election.watch_leaders() as changes: async for leaders in changes``.

        Yields the current leaders first, then each change (latest wins when the reader is
        behind). Observers do not contend.
        """
        yield self._leader_changes()

    async def _leader_changes(self) -> AsyncIterator[list[Candidate]]:
        last: list[str] | None = None
        while True:
            changed = Wakeup()
            try:
                await self._client.children(self.path, watch=changed.watch)
            except NoNode:
                await self._client.exists(self.path, watch=changed.watch)
            leaders = await self.current_leaders()
            paths = [c.path for c in leaders]
            if paths != last:
                last = paths
                yield leaders
            await changed.wait()

    # -- contending ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lead(self) -> AsyncIterator[Term]:
        """Wait for leadership; the body runs as leader and is cancelled when leadership is
        lost (then ``LeadershipLost`` is raised). Leaving the block resigns at once."""
        async with self._term(keep_candidacy=False) as term:
            yield term

    async def run(self, body: Callable[[Term], Awaitable[T]]) -> T:
        """Run ``body(term)`` whenever this process leads, contending again after each loss,
        until ``body`` returns (its result is returned; leadership is resigned)."""
        while True:
            try:
                async with self._term(keep_candidacy=True) as term:
                    return await body(term)
            except LeadershipLost as exc:
                log.warning("%s: leadership lost (%s); contending again", self.path, exc)

    @contextlib.asynccontextmanager
    async def _term(self, *, keep_candidacy: bool) -> AsyncIterator[Term]:
        # No task while leading: the body runs in a cancel scope that two callbacks cancel, the
        # node's watch (set in _take) and a session listener. So the body's own exceptions come
        # out as they are, never wrapped in an exception group.
        try:
            term = await self._acquire()
        except BaseException:  # cancelled while waiting (or failed): no phantom candidate
            with anyio.CancelScope(shield=True):
                await self.resign()
            raise
        client = self._client

        def on_session(event: SessionEvent) -> None:
            if event.state in (SessionState.LOST, SessionState.CLOSED):
                self._node, self._node_session = None, 0
                term._end(f"session {event.state.value}")
            elif event.state is SessionState.SUSPENDED and not self.tolerate_suspended:
                term._end("session suspended")

        try:
            with listening(client, on_session), anyio.CancelScope() as scope:
                if not client.state.live:  # changed before the listener was there: not missed
                    on_session(SessionEvent(client.state, client.session_id, None))
                term._scope = scope
                if term.lost is not None:
                    scope.cancel()
                yield term
        finally:
            # Shielded, both steps: when the block was cancelled from outside, an unshielded
            # await here (the watch removal) is cancelled at once and the resign never runs,
            # leaving our node ahead of every other candidate while the session lives on.
            with anyio.CancelScope(shield=True):
                with (
                    contextlib.suppress(CoordError),
                    anyio.move_on_after(client.negotiated_timeout),
                ):
                    await client.remove_watch(term.path, term._on_node_event)
                resign = not (term.lost is not None and keep_candidacy and self._node_session)
                if resign:  # (suspended under run(): keep our place, we may lead again at once)
                    await self.resign()
        if term.lost is not None:
            raise LeadershipLost(term.lost)

    async def resign(self) -> None:
        """Withdraw this candidate (deleting its node at once); no-op when not a candidate."""
        node, self._node = self._node, None
        session, self._node_session = self._node_session, 0
        await withdraw(self._client, node, session, log=log)

    async def _ensure_candidate(self) -> str:
        client = self._client
        if self._node is not None and self._node_session == client.session_id:
            # still ours as far as we know: the children listing that follows proves it exists
            # and _take() checks its owner before leading
            return self._node
        self._node = None
        # Shielded: a create in flight is seen to its end (bounded by the request deadline and
        # the session), so a cancellation never leaves a node we do not know to delete.
        with anyio.CancelScope(shield=True):
            node = await self._create_candidate()
            self._node, self._node_session = node, client.session_id
        log.debug("%s: candidate %s", self.path, node)
        return node

    async def _create_candidate(self) -> str:
        client = self._client
        session = client.session_id
        base = f"{self.path}/{self.prefix}"
        try:
            return await client.create(
                base, self.identity.encode(), ephemeral=True, sequential=True, makepath=True
            )
        except (ConnectionLoss, RequestTimeout):
            # the create may have happened without our hearing of it: adopt it, never make two.
            # The look itself is retried until answered while the session lives: giving up on
            # it (and creating again) would leave a first node of ours ahead of the second.
            ours: list[str] = []
            while True:
                await client.wait_connected()
                if client.session_id != session:
                    break  # the session went, and any node made on it with it
                try:
                    ours = await client.get_ephemerals(base)
                    break
                except (ConnectionLoss, RequestTimeout):
                    continue
            if not ours:
                raise
            node = sorted(ours, key=lambda p: _sequence(p) or 0)[-1]
            for extra in ours:
                if extra != node:
                    with contextlib.suppress(NoNode):
                        await client.delete(extra)
            return node

    async def _acquire(self) -> Term:
        client = self._client
        while True:
            try:
                await client.wait_connected()
                node = await self._ensure_candidate()
                name = node.rsplit("/", 1)[1]
                order = _ranked(await client.children(self.path))
                if name not in order:
                    self._node = None  # deleted under us (or its session lost): create again
                    continue
                rank = order.index(name)
                if rank < self.leaders:
                    term = await self._take(node, rank)
                    if term is not None:
                        return term
                    continue
                woken = Wakeup()
                ahead = order[: self.leaders] if rank == self.leaders else [order[rank - 1]]
                watched = [f"{self.path}/{other}" for other in ahead]
                for path in watched:
                    if await client.exists(path, watch=woken.watch) is None:
                        woken.set()
                # (the watches that did not fire are removed: cancelled while waiting, too)
                await wait_watched(client, watched, woken)
                self._wakeups += 1
            except (ConnectionLoss, SessionExpired, RequestTimeout) as exc:
                log.info("%s: contending again after %s", self.path, exc)
            except NodeExists:  # pragma: no cover - sequential creates do not collide
                continue

    async def _take(self, node: str, rank: int) -> Term | None:
        """Become leader with ``node``: wake the successor (N > 1), then verify the node is ours
        and watch it for the term."""
        client = self._client
        if self.leaders > 1:
            # a promotion moves every waiter up one rank: wake the successor so it looks again
            try:
                await client.set(node, self.identity.encode())
            except NoNode:
                self._node = None
                return None
        term = Term(client, node, 0, 0, rank)
        if not await term._watch_owned():
            self._node = None
            return None
        log.info("%s: leading as %s (rank %d)", self.path, node, rank)
        return term
