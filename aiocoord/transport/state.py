"""The session state machine: every change of a session's state goes through one function.

Pure: no I/O, no clock of its own. The session's I/O loop feeds it what happened (a handshake was
answered, the connection dropped, time passed, the server refused our credentials, the client
closed) and carries out what it answers: announce an event, fail what was queued for a lost session,
end every watch, stop reconnecting.

The rules it keeps (tested without a network in ``tests/transport/test_state.py``):

- LOST is announced exactly once per session, whichever comes first: the server's "expired" answer
  to a reconnect, or the client-side deadline. A handshake that was started for a session already
  declared lost is stale and changes nothing.
- The client-side deadline counts from the last frame received from the server, not from when the
  loss was noticed: the server times the session out from the last time it heard from us, so LOST
  is never reported later than the server can have expired the session.
- A new session (after LOST) starts from zxid 0: an ensemble rebuilt with older data (a wiped
  volume, a restore from backup) accepts it.
- A read-only server gives READ_ONLY. Until a read/write server has been seen, the session id
  presented on connect is 0 (a read-only server's session is local to it), so reaching the quorum
  again gives a new session (CONNECTED, watches restored), never a LOST.
- A refused credential on an established session, or a refused SASL exchange on any connection,
  is terminal (AUTH_FAILED): no reconnect loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .types import SessionEvent, SessionState

__all__ = [
    "AuthRefused",
    "Closed",
    "Dropped",
    "Established",
    "Expired",
    "Input",
    "SessionMachine",
    "Tick",
    "Transition",
]

_NO_PASSWD: Final = bytes(16)


@dataclass(frozen=True, slots=True)
class Established:
    """A server answered our ConnectRequest, which presented ``sent_id``, with a live session."""

    sent_id: int
    session_id: int
    passwd: bytes
    timeout: float
    read_only: bool
    host: str


@dataclass(frozen=True, slots=True)
class Expired:
    """The session presented as ``sent_id`` is gone: the server answered "expired"."""

    sent_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """The installed connection died; ``last_recv`` is when its last frame arrived."""

    host: str
    reason: str
    last_recv: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class AuthRefused:
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    pass


Input = Established | Expired | Dropped | Tick | AuthRefused | Closed


@dataclass(frozen=True, slots=True)
class Transition:
    """What the I/O loop must do after ``apply``.

    ``events`` to announce, in order. ``lost``: the reason the previous session is gone (fail what
    was queued for it, end every watch with EXPIRED). ``install``: an Established answer is for the
    current session and its connection is to be used (False: a stale answer, close it).
    ``terminal``: stop reconnecting for good.
    """

    events: tuple[SessionEvent, ...] = ()
    lost: str | None = None
    install: bool = False
    terminal: bool = False


_NOTHING: Final = Transition()


@dataclass(slots=True)
class SessionMachine:
    """The state of one client's session. Change it only through ``apply``."""

    state: SessionState = SessionState.SUSPENDED  # not connected yet: requests wait
    session_id: int = 0
    passwd: bytes = _NO_PASSWD
    #: the highest zxid seen on this session (sent on reconnect: a server behind it refuses us)
    last_zxid: int = 0
    #: the negotiated session timeout, seconds (the requested one until a server answers)
    timeout: float = 10.0
    #: whether a read/write server has been seen: until then the session id presented is 0
    seen_rw: bool = False
    #: when a SUSPENDED session is declared LOST, client-side (loop time), or None
    lost_deadline: float | None = None

    @property
    def connect_id(self) -> int:
        """The session id to present in a ConnectRequest."""
        return self.session_id if self.seen_rw else 0

    @property
    def terminal(self) -> bool:
        return self.state in (SessionState.CLOSED, SessionState.AUTH_FAILED)

    def saw_zxid(self, zxid: int) -> None:
        if zxid > self.last_zxid:
            self.last_zxid = zxid

    def apply(self, event: Input) -> Transition:
        """The one transition function: every state change of a session goes through here."""
        if self.state is SessionState.CLOSED or (
            self.state is SessionState.AUTH_FAILED and not isinstance(event, Closed)
        ):
            return _NOTHING  # terminal: only closing moves AUTH_FAILED on
        match event:
            case Established():
                return self._established(event)
            case Expired(sent_id=sent_id, reason=reason):
                if sent_id != self.connect_id or self.session_id == 0:
                    return _NOTHING  # an answer for a session already given up
                return self._lose(reason)
            case Dropped(host=host, last_recv=last_recv):
                if not self.state.live:
                    return _NOTHING
                if self.session_id and self.seen_rw:
                    self.lost_deadline = last_recv + self.timeout
                return self._enter(SessionState.SUSPENDED, host)
            case Tick(now=now):
                deadline = self.lost_deadline
                suspended = self.state is SessionState.SUSPENDED
                if suspended and deadline is not None and now >= deadline:
                    return self._lose(
                        f"no reconnect within the session timeout ({self.timeout:g}s)"
                    )
                return _NOTHING
            case AuthRefused(reason=reason):
                self.lost_deadline = None
                t = self._enter(SessionState.AUTH_FAILED, None)
                return Transition(t.events, lost=reason, terminal=True)
            case Closed():
                self.lost_deadline = None
                return Transition(self._enter(SessionState.CLOSED, None).events, terminal=True)
        raise AssertionError(f"unknown session input {event!r}")  # pragma: no cover

    def _established(self, e: Established) -> Transition:
        if e.sent_id != self.connect_id:
            return _NOTHING  # started before this session was declared lost: do not revive it
        events: list[SessionEvent] = []
        lost = None
        same = e.sent_id != 0 and e.session_id == e.sent_id
        if e.sent_id != 0 and not same:
            # the server gave a new session although ours was not refused: ours is gone
            t = self._lose(f"the server replaced session 0x{e.sent_id:x}")
            events.extend(t.events)
            lost = t.lost
        self.session_id, self.passwd = e.session_id, e.passwd
        self.timeout = e.timeout
        self.lost_deadline = None
        if e.read_only:
            state = SessionState.READ_ONLY
        else:
            self.seen_rw = True
            state = SessionState.RECONNECTED if same else SessionState.CONNECTED
        events.extend(self._enter(state, e.host).events)
        return Transition(tuple(events), lost=lost, install=True)

    def _lose(self, reason: str) -> Transition:
        old = self.session_id
        self.session_id, self.passwd, self.last_zxid = 0, _NO_PASSWD, 0
        self.seen_rw = False  # the next session has seen no read/write server yet
        self.lost_deadline = None
        self.state = SessionState.LOST
        return Transition((SessionEvent(SessionState.LOST, old, None),), lost=reason)

    def _enter(self, state: SessionState, host: str | None) -> Transition:
        self.state = state
        return Transition((SessionEvent(state, self.session_id, host),))
