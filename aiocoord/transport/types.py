"""Values that cross the public API: znode stats, ACLs, watch and session events, multi ops."""

from __future__ import annotations

import base64
import enum
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "ACL",
    "CREATOR_ALL_ACL",
    "OPEN_ACL_UNSAFE",
    "READ_ACL_UNSAFE",
    "CheckResult",
    "CreateResult",
    "DeleteResult",
    "EventType",
    "KeeperState",
    "Op",
    "OpResult",
    "Perm",
    "SessionEvent",
    "SessionState",
    "SetDataResult",
    "WatchEvent",
    "WatchMode",
    "ZnodeStat",
    "digest_acl",
    "digest_id",
]


class ZnodeStat(NamedTuple):
    """A znode's Stat record.

    A NamedTuple rather than a dataclass: every reply carries one, and building a tuple is several
    times cheaper than a frozen dataclass on the hot path.
    """

    czxid: int
    mzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    aversion: int
    ephemeral_owner: int
    data_length: int
    num_children: int
    pzxid: int


class Perm(enum.IntFlag):
    READ = 1
    WRITE = 2
    CREATE = 4
    DELETE = 8
    ADMIN = 16
    ALL = 31


@dataclass(frozen=True, slots=True)
class ACL:
    """One access control entry: ``perms`` granted to ``scheme:id``."""

    perms: Perm
    scheme: str
    id: str


OPEN_ACL_UNSAFE: tuple[ACL, ...] = (ACL(Perm.ALL, "world", "anyone"),)
READ_ACL_UNSAFE: tuple[ACL, ...] = (ACL(Perm.READ, "world", "anyone"),)
#: Everything for the identities the creating session authenticated as (needs ``add_auth``).
CREATOR_ALL_ACL: tuple[ACL, ...] = (ACL(Perm.ALL, "auth", ""),)


def digest_id(user: str, password: str) -> str:
    """The ``digest`` scheme id for a user: ``user:base64(sha1(user:password))``."""
    raw = hashlib.sha1(f"{user}:{password}".encode()).digest()
    return f"{user}:{base64.b64encode(raw).decode()}"


def digest_acl(user: str, password: str, perms: Perm = Perm.ALL) -> ACL:
    """An ACL entry granting ``perms`` to a digest user."""
    return ACL(perms, "digest", digest_id(user, password))


class EventType(enum.IntEnum):
    NONE = -1
    NODE_CREATED = 1
    NODE_DELETED = 2
    NODE_DATA_CHANGED = 3
    NODE_CHILDREN_CHANGED = 4
    DATA_WATCH_REMOVED = 5
    CHILD_WATCH_REMOVED = 6
    PERSISTENT_WATCH_REMOVED = 7


class KeeperState(enum.IntEnum):
    DISCONNECTED = 0
    SYNC_CONNECTED = 3
    AUTH_FAILED = 4
    CONNECTED_READ_ONLY = 5
    SASL_AUTHENTICATED = 6
    EXPIRED = -112
    CLOSED = 7


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A watch fired. ``state`` is EXPIRED (and ``type`` NONE) when the session that held the watch
    was lost: the watch is gone and will not fire again; re-read and re-watch on the new session."""

    type: EventType
    state: KeeperState
    path: str


class WatchMode(enum.IntEnum):
    """addWatch modes: fire on every change, of the node or of the whole subtree."""

    PERSISTENT = 0
    PERSISTENT_RECURSIVE = 1


class SessionState(enum.Enum):
    CONNECTED = "connected"  #: a new session is established
    SUSPENDED = "suspended"  #: the connection is lost; the session may still be alive
    RECONNECTED = "reconnected"  #: connected again, same session: re-check state
    #: connected to a server cut off from its quorum (only with ``read_only=True``): reads are
    #: served, writes fail with NotReadOnly; the client keeps looking for a read/write server
    READ_ONLY = "read_only"
    LOST = "lost"  #: the session expired; everything it owned is gone: re-create
    #: the server refused the client's credentials: terminal, the client does not reconnect
    AUTH_FAILED = "auth_failed"
    CLOSED = "closed"  #: the client was closed

    @property
    def live(self) -> bool:
        """Whether requests are served in this state (CONNECTED, RECONNECTED or READ_ONLY)."""
        return self in _LIVE_STATES


_LIVE_STATES = frozenset((SessionState.CONNECTED, SessionState.RECONNECTED, SessionState.READ_ONLY))


@dataclass(frozen=True, slots=True)
class SessionEvent:
    state: SessionState
    session_id: int
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a multi(); build with the class methods."""

    opcode: int
    path: str
    data: bytes = b""
    version: int = -1
    acl: tuple[ACL, ...] | None = None
    flags: int = 0

    @classmethod
    def create(
        cls,
        path: str,
        data: bytes = b"",
        *,
        acl: tuple[ACL, ...] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
    ) -> Op:
        return cls(1, path, data, acl=acl, flags=int(ephemeral) | int(sequential) << 1)

    @classmethod
    def delete(cls, path: str, version: int = -1) -> Op:
        return cls(2, path, version=version)

    @classmethod
    def set_data(cls, path: str, data: bytes, version: int = -1) -> Op:
        return cls(5, path, data, version=version)

    @classmethod
    def check(cls, path: str, version: int = -1) -> Op:
        """Passes when ``path`` exists (and has ``version``, unless -1)."""
        return cls(13, path, version=version)


@dataclass(frozen=True, slots=True)
class CreateResult:
    path: str
    stat: ZnodeStat | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    pass


@dataclass(frozen=True, slots=True)
class SetDataResult:
    stat: ZnodeStat


@dataclass(frozen=True, slots=True)
class CheckResult:
    pass


OpResult = CreateResult | DeleteResult | SetDataResult | CheckResult
