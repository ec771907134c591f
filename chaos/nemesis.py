"""Carries out a schedule of faults against the ensemble and the client processes, and logs each
fault's start and end (with wall-clock times, as the histories have) to ``faults.jsonl``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiocoord.testing import ZooKeeperEnsemble, expire_session_id

from .cluster import Proc
from .history import Recorder
from .schedule import MEMBER_FAULTS, Fault

log = logging.getLogger("chaos.nemesis")

#: how long a restarted member may take to serve again before the campaign gives up
MEMBER_RECOVERY = 90.0


class Nemesis:
    def __init__(
        self,
        ensemble: ZooKeeperEnsemble,
        procs: Mapping[str, Proc],
        rundir: Path,
        session_timeout: float,
    ) -> None:
        self.ensemble = ensemble
        self.procs = procs
        self.session_timeout = session_timeout
        self._log = Recorder(rundir / "faults.jsonl", "nemesis")
        self._member_lock = asyncio.Lock()  # one member fault at a time, whatever the clock says
        self._healing: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def _note(self, phase: str, fault: Fault, **extra: Any) -> None:
        self._log.record("event", phase, kind=fault.kind, target=fault.target, **extra)
        log.info("%s %s %s %s", phase, fault.kind, fault.target, extra or "")

    async def run(self, faults: list[Fault], start: float) -> None:
        """Fire each fault at ``start + fault.at`` (monotonic clock); returns when every fault
        has ended and been healed."""
        try:
            for fault in faults:
                delay = start + fault.at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._fire(fault))
                self._healing.add(task)
                task.add_done_callback(self._healing.discard)
            while self._healing:
                await asyncio.gather(*list(self._healing))
        finally:
            for task in list(self._healing):
                task.cancel()
            await asyncio.gather(*self._healing, return_exceptions=True)
            self.heal_all()

    async def _fire(self, fault: Fault) -> None:
        if fault.kind in MEMBER_FAULTS:
            async with self._member_lock:
                await self._member(fault)
        else:
            await self._client(fault)

    async def _member(self, fault: Fault) -> None:
        if fault.target == "leader":
            index = await asyncio.to_thread(self.ensemble.leader)
            if index is None:
                self.skipped[fault.kind] += 1
                self._note("skip", fault, reason="no leader")
                return
        else:
            index = int(fault.target)
        member = self.ensemble.members[index]
        was_leader = index == await asyncio.to_thread(self.ensemble.leader)
        self.counts[fault.kind] += 1
        self._note("start", fault, member=index, leader=was_leader)
        if fault.kind in ("member-pause", "member-pause-long"):
            member.pause()
            self._watch_leader(was_leader, fault)
            try:
                await asyncio.sleep(fault.duration)
            finally:
                member.resume()
        else:
            await asyncio.to_thread(member.kill)
            self._watch_leader(was_leader, fault)
            await asyncio.sleep(fault.duration)
            await asyncio.to_thread(member.restart, wipe=fault.kind == "member-wipe")
        await asyncio.to_thread(self.ensemble.wait_serving, MEMBER_RECOVERY, members=[index])
        self._note("end", fault, member=index)

    def _watch_leader(self, was_leader: bool, fault: Fault) -> None:
        if was_leader:
            watch = asyncio.create_task(self._leader_back(fault))
            self._healing.add(watch)
            watch.add_done_callback(self._healing.discard)

    async def _leader_back(self, fault: Fault) -> None:
        """Log when a quorum leader serves again after the leader was hit: until then the
        ensemble takes no write, and ZooKeeper restarts every session's expiry timer when a new
        leader takes over, so a dead client's ephemerals outlive it by that long."""
        deadline = time.monotonic() + MEMBER_RECOVERY
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            index = await asyncio.to_thread(self.ensemble.leader)
            if index is not None:
                self._note("leader-elected", fault, member=index)
                return

    async def _client(self, fault: Fault) -> None:
        proc = self.procs[fault.target]
        link = proc.link
        if fault.kind == "session-expire":
            creds = proc.credentials()
            if creds is None or not proc.alive or proc.paused:
                self.skipped[fault.kind] += 1
                self._note("skip", fault, reason="no session")
                return
        if fault.kind == "proc-kill" and not proc.alive:
            self.skipped[fault.kind] += 1
            self._note("skip", fault, reason="not running")
            return
        self.counts[fault.kind] += 1
        self._note("start", fault, incarnation=proc.incarnation)
        match fault.kind:
            case "link-cut":
                link.cut()
            case "link-flap":
                for _ in range(5):
                    link.cut()
                    await asyncio.sleep(fault.duration / 5)
            case "link-stall" | "link-stall-long":
                link.stall()
                try:
                    await asyncio.sleep(fault.duration)
                finally:
                    link.resume()
            case "session-expire":
                assert creds is not None
                session_id, passwd = creds
                host = self.ensemble.members[0].address
                for member in self.ensemble:
                    if member.running and not member.paused:
                        host = member.address
                        break
                try:
                    await expire_session_id(
                        session_id, passwd, host, timeout_ms=int(self.session_timeout * 1000)
                    )
                except (TimeoutError, OSError) as e:
                    self._note("fail", fault, error=repr(e))
                    return
            case "proc-kill":
                await asyncio.to_thread(proc.kill)
                await asyncio.sleep(fault.duration)
                proc.start()
            case "proc-pause" | "proc-pause-long":
                proc.pause()
                try:
                    await asyncio.sleep(fault.duration)
                finally:
                    proc.resume()
            case _:
                raise ValueError(f"unknown fault kind {fault.kind}")
        self._note("end", fault, incarnation=proc.incarnation)

    def heal_all(self) -> None:
        """Undo whatever is still in effect: every link forwards, every process runs."""
        for proc in self.procs.values():
            proc.link.resume()
            if proc.paused:
                proc.resume()
        for member in self.ensemble:
            if member.paused:
                member.resume()
            if not member.running:
                member.restart()
