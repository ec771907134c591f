"""Service processes for the tests: ``python -m services ...``, stopped after the test."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc


def aiocoord_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "services", *args]


@asynccontextmanager
async def service(*args: str, log: Path | None = None) -> AsyncIterator[anyio.abc.Process]:
    """An ``aiocoord`` service process (its output appended to ``log``, else inherited);
    resumed if paused, then stopped with SIGTERM (SIGKILL after 10 s) when the block ends."""
    with ExitStack() as files:
        out = files.enter_context(log.open("ab")) if log is not None else None
        async with await anyio.open_process(aiocoord_cmd(*args), stdout=out, stderr=out) as proc:
            try:
                yield proc
            finally:
                await stop(proc)


async def stop(proc: anyio.abc.Process) -> None:
    """Resume ``proc`` if paused, then SIGTERM, and SIGKILL if it has not ended after 10 s
    (shielded: this runs on the way out of a cancelled test too)."""
    if proc.returncode is None:
        with anyio.CancelScope(shield=True):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            with anyio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
