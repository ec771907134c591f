"""A shared counter on kazoo's znode layout and encoding, so that kazoo and aiocoord processes
count on the same node during a migration.

Znode layout (``kazoo.recipe.counter``)::

    <path>    PERSISTENT, data = repr(value) in ASCII (b"7", b"2.5"); empty = the default

A change reads the value and its version, and writes ``repr(value + delta)`` at that version;
another writer in between (``BadVersion``) makes it read and try again (optimistic concurrency:
no lock, no node per writer). ``add()`` returns the values before and after (kazoo's
``pre_value`` and ``post_value``).

**A lost reply is never counted twice.** When the connection dies with the versioned write in
flight (``ConnectionLoss``), or the session ends with it (``SessionExpired``), or its deadline
runs out (``RequestTimeout``), the write may or may not have been applied: sending it again
blindly could count it twice. ``add()`` reads the node again (``sync()`` first, once the session
serves) and decides with ``lost_write_outcome()``:

- the node still at the version the write was made for: the write was not applied, and never
  will be, so the change is made again. (ZooKeeper serves a session's requests in order: a read
  sent after the write on the same connection sees it; a write on a dead connection is applied,
  if ever, before the session serves again elsewhere: once the session has moved, ZooKeeper
  refuses it. The same reasoning lets a protected create look for its node.)
- the node one version further with other data than ours: that version's write was another
  writer's, ours was refused (``BadVersion``), so the change is made again;
- anything else (our data at the next version: ours, or another writer's that wrote the same
  value; later versions; the node deleted or re-created): ``CounterOutcomeUnknown`` is raised,
  carrying the value before and the value our write would have left. The caller decides (the
  change was applied once or not at all, never twice).

SUSPENDED: a change waits for the reconnect (up to the request deadline), then goes on as above.
LOST: the same, on the new session (the counter is persistent: nothing of ours is lost).
Cancellation: a change cancelled with its write in flight may have been applied once (as a lost
reply); one cancelled before leaves the counter as it was. Nothing else is left behind.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

import anyio

from ..transport.client import Client
from ..transport.errors import (
    BadVersion,
    ConnectionLoss,
    CoordError,
    NoNode,
    RequestTimeout,
    SessionExpired,
)
from ..transport.paths import validate_path
from ..transport.types import ZnodeStat
from ._session import RETRYABLE

__all__ = [
    "Counter",
    "CounterChange",
    "CounterOutcomeUnknown",
    "InvalidCounterValue",
    "LostWrite",
    "lost_write_outcome",
]

log = logging.getLogger("aiocoord.counter")

#: the first pause after a conflicting write (seconds); doubled per conflict, up to 32 times
_BACKOFF = 0.0005

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class CounterChange(Generic[N]):
    """One applied change: the value before and after it (kazoo's ``pre_value`` and
    ``post_value``), and the node's data version it left."""

    pre_value: N
    post_value: N
    version: int


class CounterOutcomeUnknown(CoordError):
    """A change whose write reply was lost, and whose outcome could not be proved: it was applied
    once or not at all (never twice). ``pre_value`` is the value it was computed from,
    ``post_value`` the value it would have left, ``seen`` the value now."""

    def __init__(self, path: str, pre_value: float, post_value: float, seen: float | None) -> None:
        super().__init__(
            f"{path}: the change {pre_value!r} -> {post_value!r} may or may not have been "
            f"applied (its reply was lost; the counter is now {seen!r})"
        )
        self.path = path
        self.pre_value = pre_value
        self.post_value = post_value
        self.seen = seen


class InvalidCounterValue(CoordError, ValueError):
    """The counter node holds data that is not a value of the counter's type."""


class LostWrite(enum.Enum):
    """What a read after a lost write reply proves about that write."""

    NOT_APPLIED = "not applied"  #: the change may be made again
    UNKNOWN = "unknown"  #: applied once or not at all


def lost_write_outcome(
    written_at: ZnodeStat, data: bytes, now: ZnodeStat | None, now_data: bytes
) -> LostWrite:
    """What the node now (``now``, None when gone, and ``now_data``, read after ``sync()``) proves
    about a write of ``data`` at ``written_at.version`` whose reply was lost."""
    if now is None or now.czxid != written_at.czxid:
        return LostWrite.UNKNOWN  # deleted (or re-created): what happened before cannot be seen
    if now.version == written_at.version:
        return LostWrite.NOT_APPLIED
    if now.version == written_at.version + 1 and now_data != data:
        return LostWrite.NOT_APPLIED  # the one write at our version was another's
    return LostWrite.UNKNOWN


class Counter(Generic[N]):
    """A shared counter at ``path`` (kazoo's ``Counter``): ``int`` by default, ``float`` with a
    float ``default`` (the value of a node that is empty or new).

    ``change = await counter.add(2)`` (``change.post_value``), ``await counter.subtract(1)``,
    ``await counter.value()``. A change whose reply is lost is made again only when it provably
    was not applied; otherwise ``CounterOutcomeUnknown`` (never counted twice).
    """

    @overload
    def __init__(self: Counter[int], client: Client, path: str) -> None: ...
    @overload
    def __init__(self, client: Client, path: str, default: N) -> None: ...
    def __init__(self, client: Client, path: str, default: float = 0) -> None:
        validate_path(path)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise TypeError("a counter counts int or float values")
        self._client = client
        self.path = path
        self.default: N = default  # type: ignore[assignment]
        self._type: type[N] = type(default)  # type: ignore[assignment]
        self._ensured = False

    def _check(self, delta: object) -> N:
        if isinstance(delta, bool) or not isinstance(delta, self._type):
            raise TypeError(f"a {self._type.__name__} counter changes by a {self._type.__name__}")
        if isinstance(delta, float) and not math.isfinite(delta):
            raise ValueError(f"{delta!r} is not a finite change")
        return delta

    def _decode(self, data: bytes) -> N:
        if not data:
            return self.default
        try:
            return self._type(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidCounterValue(
                f"{self.path} holds {data[:40]!r}, not a {self._type.__name__}"
            ) from exc

    async def _read(self) -> tuple[N, ZnodeStat]:
        client = self._client
        if not self._ensured:
            await client.ensure_path(self.path)
            self._ensured = True
        data, stat = await client.get(self.path)
        return self._decode(data), stat

    async def value(self) -> N:
        """The current value (the default when the node is empty; the node made when missing)."""
        while True:
            try:
                return (await self._read())[0]
            except NoNode:
                self._ensured = False  # deleted meanwhile: made again
            except RETRYABLE as exc:
                log.info("%s: reading again after %s", self.path, exc)

    async def add(self, delta: N) -> CounterChange[N]:
        """Add ``delta`` (of the counter's type); the values before and after."""
        return await self._change(self._check(delta))

    async def subtract(self, delta: N) -> CounterChange[N]:
        """Subtract ``delta`` (of the counter's type); the values before and after."""
        return await self._change(-self._check(delta))

    async def _change(self, delta: N) -> CounterChange[N]:
        client = self._client
        conflicts = 0
        while True:
            try:
                pre, stat = await self._read()
            except NoNode:
                self._ensured = False
                continue
            except RETRYABLE as exc:
                log.info("%s: reading again after %s", self.path, exc)
                continue
            post: N = pre + delta
            data = repr(post).encode("ascii")
            try:
                written = await client.set(self.path, data, stat.version)
            except BadVersion:
                # another writer came first: read and try again, after a random pause that
                # grows with each conflict, so contending writers spread out instead of all
                # reading and colliding again
                conflicts += 1
                await anyio.sleep(random.uniform(0, _BACKOFF * 2 ** min(conflicts, 5)))
                continue
            except NoNode:
                self._ensured = False
                continue  # deleted: not applied
            except (ConnectionLoss, SessionExpired, RequestTimeout) as exc:
                outcome, seen = await self._settle(stat, data)
                if outcome is LostWrite.UNKNOWN:
                    raise CounterOutcomeUnknown(self.path, pre, post, seen) from exc
                log.info("%s: %s; the write was not applied: changing again", self.path, exc)
                continue
            return CounterChange(pre, post, written.version)

    async def _settle(self, written_at: ZnodeStat, data: bytes) -> tuple[LostWrite, N | None]:
        """Read the node again once the session serves: what that proves about the lost write,
        and the value now (None when the node is gone)."""
        client = self._client
        while True:
            try:
                await client.wait_connected()
                await client.sync(self.path)  # the server we read from has every write made
                try:
                    now_data, now = await client.get(self.path)
                except NoNode:
                    now_data, now = b"", None
            except RETRYABLE as exc:
                log.info("%s: looking again after %s", self.path, exc)
                continue
            outcome = lost_write_outcome(written_at, data, now, now_data)
            return outcome, (self._decode(now_data) if now is not None else None)
