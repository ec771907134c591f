"""The nemesis's plan: a pure function of the seed, the duration, the targets and the session
timeout, so that the same seed replays the same faults in the same order at the same offsets."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: fault kinds on an ensemble member, with their weights
MEMBER_FAULTS = {
    "member-kill": 3,  # kill -9 a member, restart it after `duration`
    "leader-kill": 3,  # the same, on the quorum leader (found with srvr when it fires)
    "member-wipe": 1,  # kill -9 a member, restart it with an empty data directory
    "member-pause": 2,  # SIGSTOP a member for `duration`, then SIGCONT
    "member-pause-long": 2,  # ... for longer than the session timeout
}

#: fault kinds on a client process (its link is a TCP proxy per member)
CLIENT_FAULTS = {
    "link-cut": 3,  # reset the client's connections once
    "link-flap": 2,  # reset them five times in two seconds
    "link-stall": 2,  # hold every byte both ways for `duration` (< 2/3 T)
    "link-stall-long": 2,  # ... for longer than the session timeout: the server expires it
    "session-expire": 2,  # expire the session on the server (duplicate-session close)
    "proc-kill": 3,  # kill -9 the process, start it again after `duration`
    "proc-pause": 2,  # SIGSTOP the process for `duration` (< 2/3 T), then SIGCONT
    "proc-pause-long": 2,  # ... for longer than the session timeout
}

#: the quiet time before the first fault and after the last one
WARMUP = 3.0


@dataclass(frozen=True)
class Target:
    """A client the nemesis may hit: ``kinds`` are the client fault kinds that apply to it."""

    name: str
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the campaign's start
    kind: str
    target: str  # a member index ("0", "1", "2"), "leader", or a client's name
    duration: float  # how long the fault lasts; 0 for the instant ones

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _duration(kind: str, rng: random.Random, session_timeout: float) -> float:
    t = session_timeout
    spans = {
        "member-kill": (1.0, 4.0),
        "leader-kill": (1.0, 4.0),
        "member-wipe": (1.0, 3.0),
        "member-pause": (0.2 * t, 0.5 * t),
        "member-pause-long": (1.3 * t, 2.0 * t),
        "link-cut": (0.0, 0.0),
        "link-flap": (2.0, 2.0),
        "link-stall": (0.2 * t, 0.5 * t),
        "link-stall-long": (1.3 * t, 2.0 * t),
        "session-expire": (0.0, 0.0),
        "proc-kill": (0.5, 3.0),
        "proc-pause": (0.2 * t, 0.5 * t),
        "proc-pause-long": (1.3 * t, 2.0 * t),
    }
    low, high = spans[kind]
    return round(rng.uniform(low, high), 2)


def plan(
    seed: int,
    duration: float,
    targets: Sequence[Target],
    *,
    session_timeout: float,
    members: int = 3,
    mean_gap: float = 2.5,
) -> list[Fault]:
    """The faults of one campaign, in the order they fire. At most one member is faulty at a
    time (the ensemble keeps its quorum), and a target is never hit again while its previous
    fault lasts (plus the session timeout to recover)."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    busy: dict[str, float] = {}
    member_busy = 0.0
    t = WARMUP
    kinds = {**MEMBER_FAULTS, **CLIENT_FAULTS}
    names = sorted(kinds)
    weights = [kinds[k] for k in names]
    while True:
        t += round(rng.uniform(0.5 * mean_gap, 1.5 * mean_gap), 2)
        if t >= duration - WARMUP - session_timeout:
            return faults
        kind = rng.choices(names, weights)[0]
        length = _duration(kind, rng, session_timeout)
        if kind in MEMBER_FAULTS:
            if t < member_busy:
                continue
            target = "leader" if kind == "leader-kill" else str(rng.randrange(members))
            # a restarted member needs time to rejoin and sync before the next member fault
            member_busy = t + length + 2 * session_timeout
        else:
            fit = [x.name for x in targets if kind in x.kinds and busy.get(x.name, 0.0) <= t]
            if not fit:
                continue
            target = rng.choice(fit)
            busy[target] = t + length + session_timeout
        faults.append(Fault(round(t, 2), kind, target, length))
