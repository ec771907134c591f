"""Small helpers for tests: bounded waits on session states and watch events."""

from __future__ import annotations

import anyio

from aiocoord import SessionFeed, SessionState, WatchEvent


async def wait_state(feed: SessionFeed, state: SessionState, timeout: float) -> list[SessionState]:
    """Read session events until ``state``; return every state seen on the way."""
    seen: list[SessionState] = []
    with anyio.fail_after(timeout):
        async for event in feed:
            seen.append(event.state)
            if event.state is state:
                return seen
    raise AssertionError(f"feed ended before {state}; saw {seen}")


class Recorder:
    """A watch callback that records events and lets a test wait for them."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self._changed = anyio.Event()

    def __call__(self, event: WatchEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait(self, count: int = 1, timeout: float = 5.0) -> list[WatchEvent]:
        with anyio.fail_after(timeout):
            while len(self.events) < count:
                self._changed = anyio.Event()
                await self._changed.wait()
        return self.events
