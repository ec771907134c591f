"""The session state machine, driven without a network: each rule of ``state.py`` is pinned here."""

from __future__ import annotations

from aiocoord import SessionState
from aiocoord.transport.state import (
    AuthRefused,
    Closed,
    Dropped,
    Established,
    Expired,
    SessionMachine,
    Tick,
    Transition,
)

S = SessionState


def connected(machine: SessionMachine, session_id: int = 0x10, timeout: float = 6.0) -> None:
    t = machine.apply(Established(machine.connect_id, session_id, b"p" * 16, timeout, False, "h:1"))
    assert t.install


def test_first_connect_is_connected_and_a_reconnect_of_the_same_session_is_reconnected() -> None:
    m = SessionMachine(timeout=10)
    t = m.apply(Established(0, 0x10, b"p" * 16, 6.0, False, "h:1"))
    assert [e.state for e in t.events] == [S.CONNECTED]
    assert t.install and t.lost is None
    assert m.timeout == 6.0  # the negotiated timeout replaces the requested one
    m.apply(Dropped("h:1", "EOF", last_recv=100.0))
    assert m.state is S.SUSPENDED
    t = m.apply(Established(0x10, 0x10, b"p" * 16, 6.0, False, "h:2"))
    assert [e.state for e in t.events] == [S.RECONNECTED]
    assert m.lost_deadline is None


def test_lost_deadline_counts_from_the_last_frame_received() -> None:
    m = SessionMachine(timeout=10)
    connected(m, timeout=6.0)
    # noticed late (read timeout at 2/3): the deadline still counts from the last frame
    m.apply(Dropped("h:1", "read timeout", last_recv=100.0))
    assert m.lost_deadline == 106.0
    assert m.apply(Tick(105.9)).events == ()
    t = m.apply(Tick(106.0))
    assert [e.state for e in t.events] == [S.LOST]
    assert t.lost is not None
    assert t.events[0].session_id == 0x10


def test_lost_is_announced_once_per_session() -> None:
    m = SessionMachine(timeout=10)
    connected(m)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    assert [e.state for e in m.apply(Tick(100.0)).events] == [S.LOST]
    # a handshake started before the client-side LOST, answered "expired": nothing more
    t = m.apply(Expired(0x10, "the server says so"))
    assert t.events == () and t.lost is None
    assert m.apply(Tick(200.0)).events == ()
    assert m.state is S.LOST


def test_server_expiry_then_the_client_deadline_announce_one_loss() -> None:
    m = SessionMachine(timeout=10)
    connected(m)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    t = m.apply(Expired(0x10, "the server says so"))
    assert [e.state for e in t.events] == [S.LOST]
    assert m.apply(Tick(100.0)).events == ()


def test_a_stale_handshake_does_not_revive_a_lost_session() -> None:
    m = SessionMachine(timeout=10)
    connected(m)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    m.apply(Tick(100.0))
    t = m.apply(Established(0x10, 0x10, b"p" * 16, 6.0, False, "h:2"))
    assert not t.install and t.events == ()
    assert m.state is S.LOST and m.session_id == 0


def test_a_new_session_after_lost_starts_from_zxid_zero() -> None:
    m = SessionMachine(timeout=10)
    connected(m)
    m.saw_zxid(0x500)
    m.saw_zxid(0x400)  # never backwards
    assert m.last_zxid == 0x500
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    m.apply(Tick(100.0))
    assert m.last_zxid == 0 and m.connect_id == 0 and m.passwd == bytes(16)
    t = m.apply(Established(0, 0x20, b"q" * 16, 6.0, False, "h:1"))
    assert [e.state for e in t.events] == [S.CONNECTED]


def test_requests_queued_after_lost_belong_to_the_next_session() -> None:
    # LOST reports the old session id; CONNECTED the new one
    m = SessionMachine(timeout=10)
    connected(m, session_id=0x10)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    lost = m.apply(Tick(100.0)).events[0]
    t = m.apply(Established(0, 0x20, b"q" * 16, 6.0, False, "h:1"))
    assert (lost.state, lost.session_id) == (S.LOST, 0x10)
    assert (t.events[0].state, t.events[0].session_id) == (S.CONNECTED, 0x20)
    assert t.lost is None  # nothing of the new session is failed


def test_a_replaced_session_is_lost_then_connected() -> None:
    m = SessionMachine(timeout=10)
    connected(m, session_id=0x10)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    t = m.apply(Established(0x10, 0x30, b"q" * 16, 6.0, False, "h:2"))
    assert [e.state for e in t.events] == [S.LOST, S.CONNECTED]
    assert t.install and t.lost is not None


def test_read_only_presents_session_zero_until_a_read_write_server_is_seen() -> None:
    m = SessionMachine(timeout=10)
    t = m.apply(Established(0, 0x77, b"r" * 16, 6.0, True, "ro:1"))
    assert [e.state for e in t.events] == [S.READ_ONLY]
    assert m.state.live
    assert m.session_id == 0x77 and m.connect_id == 0
    m.apply(Dropped("ro:1", "left for a read/write server", last_recv=0.0))
    assert m.lost_deadline is None  # a read-only session has nothing the quorum could expire
    assert m.apply(Tick(1000.0)).events == ()
    # the quorum is back: a new global session, CONNECTED (watches are restored), never LOST
    t = m.apply(Established(0, 0x88, b"s" * 16, 6.0, False, "rw:2"))
    assert [e.state for e in t.events] == [S.CONNECTED]
    assert t.lost is None and m.connect_id == 0x88


def test_after_a_read_write_server_the_session_id_is_presented() -> None:
    m = SessionMachine(timeout=10)
    connected(m, session_id=0x10)
    m.apply(Dropped("h:1", "EOF", last_recv=50.0))
    assert m.connect_id == 0x10
    t = m.apply(Established(0x10, 0x10, b"p" * 16, 6.0, True, "ro:1"))
    assert [e.state for e in t.events] == [S.READ_ONLY]


def test_refused_credentials_are_terminal() -> None:
    m = SessionMachine(timeout=10)
    connected(m)
    t = m.apply(AuthRefused("AUTHFAILED"))
    assert t.terminal and t.lost is not None
    assert [e.state for e in t.events] == [S.AUTH_FAILED]
    assert not m.state.live
    # nothing moves it again: no reconnect, no later LOST or CLOSED
    assert m.apply(Established(0, 0x20, b"q" * 16, 6.0, False, "h:1")).events == ()
    assert m.apply(Tick(1e9)).events == ()
    assert m.state is S.AUTH_FAILED
    assert [e.state for e in m.apply(Closed()).events] == [S.CLOSED]  # aclose() still reports


def test_drop_while_not_live_changes_nothing() -> None:
    m = SessionMachine(timeout=10)
    assert m.apply(Dropped("h:1", "EOF", last_recv=0.0)).events == ()
    assert m.lost_deadline is None  # never connected: no session to lose


def test_closed_is_terminal() -> None:
    m = SessionMachine(timeout=10)
    connected(m)
    t = m.apply(Closed())
    assert [e.state for e in t.events] == [S.CLOSED] and t.terminal
    assert m.apply(Dropped("h:1", "EOF", last_recv=0.0)).events == ()


def test_after_lost_a_read_only_session_is_not_presented_to_the_quorum() -> None:
    m = SessionMachine(timeout=10)
    connected(m, session_id=0x10)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    m.apply(Tick(100.0))  # LOST: the member left the quorum and forgot the session
    m.apply(Established(0, 0x99, b"r" * 16, 6.0, True, "ro:1"))
    assert m.state is S.READ_ONLY and m.connect_id == 0


def test_events_name_the_host_they_happened_on() -> None:
    m = SessionMachine(timeout=10)
    t = m.apply(Established(0, 0x10, b"p" * 16, 6.0, False, "h:1"))
    assert [(e.state, e.host) for e in t.events] == [(S.CONNECTED, "h:1")]
    t = m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    assert [(e.state, e.host) for e in t.events] == [(S.SUSPENDED, "h:1")]
    t = m.apply(Tick(100.0))
    assert [(e.state, e.host) for e in t.events] == [(S.LOST, None)]


def test_an_expired_answer_is_lost_with_its_reason() -> None:
    m = SessionMachine(timeout=10)
    connected(m, session_id=0x10)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    t = m.apply(Expired(0x10, "the server says so"))
    assert t.lost == "the server says so"
    assert m.lost_deadline is None  # the I/O loop's ticker reads it: None, never a stand-in


def test_an_expired_answer_for_another_session_or_none_is_ignored() -> None:
    m = SessionMachine(timeout=10)
    assert m.apply(Expired(0, "a first connect cannot expire")).events == ()
    connected(m, session_id=0x10)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    t = m.apply(Expired(0x99, "an answer for a session given up before"))
    assert t.events == () and t.lost is None
    assert m.state is S.SUSPENDED and m.session_id == 0x10


def test_session_id_one_reconnects_like_any_other() -> None:
    m = SessionMachine(timeout=10)
    connected(m, session_id=0x1)
    m.apply(Dropped("h:1", "EOF", last_recv=0.0))
    t = m.apply(Established(0x1, 0x1, b"p" * 16, 6.0, False, "h:2"))
    assert [e.state for e in t.events] == [S.RECONNECTED] and t.lost is None


def test_terminal_states_clear_the_lost_deadline() -> None:
    for end in (AuthRefused("AUTHFAILED"), Closed()):
        m = SessionMachine(timeout=10)
        connected(m)
        m.apply(Dropped("h:1", "EOF", last_recv=0.0))
        assert m.lost_deadline == 6.0
        m.apply(end)
        assert m.lost_deadline is None, end


def test_a_closed_session_ignores_every_input() -> None:
    m = SessionMachine(timeout=10)
    m.apply(Closed())
    assert m.apply(Established(0, 0x20, b"q" * 16, 6.0, False, "h:1")) == Transition()
    assert m.apply(Closed()) == Transition()
    assert m.state is S.CLOSED and m.session_id == 0
