"""Histories as Jepsen records them: one JSON object per line, per process incarnation.

Every operation is recorded twice: ``invoke`` when it is sent, then ``ok`` (it happened), ``fail``
(it certainly did not) or ``info`` (unknown: the connection dropped with it in flight, as a
timeout may still succeed). Events that are not operations (a CMD starting, a heartbeat, what a
cache saw) are recorded with type ``event``. Each line is one ``os.write`` to a file opened with
``O_APPEND``, so a process killed with -9 loses at most the line it was writing, and the lines
of one file are in the order they happened.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Entry = dict[str, Any]


class Recorder:
    """Appends the entries of one process incarnation to ``path``."""

    def __init__(self, path: str | os.PathLike[str], process: str) -> None:
        self.process = process
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._ids = 0

    def record(self, type_: str, f: str, **value: Any) -> None:
        entry = {"t": time.time(), "process": self.process, "type": type_, "f": f, **value}
        os.write(self._fd, json.dumps(entry, separators=(",", ":")).encode() + b"\n")

    def invoke(self, f: str, **value: Any) -> int:
        """Record an invocation; returns its id, to give to ``complete``."""
        self._ids += 1
        self.record("invoke", f, id=self._ids, **value)
        return self._ids

    def complete(self, type_: str, op: int, f: str, **value: Any) -> None:
        assert type_ in ("ok", "fail", "info"), type_
        self.record(type_, f, id=op, **value)

    def event(self, f: str, **value: Any) -> None:
        self.record("event", f, **value)

    def close(self) -> None:
        os.close(self._fd)


def read(directory: str | os.PathLike[str]) -> list[Entry]:
    """Every entry of every ``*.jsonl`` file under ``directory``, ordered by time. A torn last
    line (a process killed while writing it) is skipped."""
    entries: list[Entry] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        entries.extend(_lines(path))
    entries.sort(key=lambda e: e["t"])
    return entries


def read_file(path: str | os.PathLike[str]) -> list[Entry]:
    """The entries of one file, in the order they were written."""
    return list(_lines(Path(path)))


def _lines(path: Path) -> Iterator[Entry]:
    for line in path.read_bytes().splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def operations(entries: list[Entry], f: str) -> list[tuple[Entry, Entry | None]]:
    """Pair each ``invoke`` of ``f`` with its completion; None when the process died before one
    (an unknown outcome, like ``info``)."""
    pending: dict[tuple[str, int], Entry] = {}
    pairs: dict[tuple[str, int], tuple[Entry, Entry | None]] = {}
    for e in entries:
        if e["f"] != f or e["type"] == "event":
            continue
        key = (e["process"], e["id"])
        if e["type"] == "invoke":
            pending[key] = e
            pairs[key] = (e, None)
        elif key in pending:
            pairs[key] = (pending.pop(key), e)
    return list(pairs.values())


def outcome(completion: Entry | None) -> str:
    """ok, fail or info (a missing completion is info)."""
    return "info" if completion is None else str(completion["type"])


#: an acknowledged fenced write: (the mzxid the server applied it at, its hold's token, process)
Write = tuple[int, int, str]


def tokens_going_back(writes: list[Write]) -> Iterator[tuple[Write, Write]]:
    """In the order the server applied them, each write whose token is below the highest token
    written before it, with that earlier write: a hold that had ended (or was behind another in
    the queue) wrote after a newer one had."""
    highest: Write = (0, 0, "")
    for write in sorted(writes):
        if write[1] < highest[1]:
            yield highest, write
        else:
            highest = write
