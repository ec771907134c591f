"""Small helpers for tests: bounded waits on session states and watch events."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream
from anyio.streams.buffered import BufferedByteReceiveStream
from kazoo.client import KazooClient

from aiocoord import Client, SessionFeed, SessionState, WatchEvent
from aiocoord.testing import ZooKeeperServer


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


async def read_line(stream: ByteReceiveStream, timeout: float) -> str:
    """One line from a subprocess's output stream, bounded."""
    buffered = _buffers.setdefault(id(stream), BufferedByteReceiveStream(stream))
    with anyio.fail_after(timeout):
        return (await buffered.receive_until(b"\n", 65536)).decode()


async def read_rest(stream: ByteReceiveStream, timeout: float) -> str:
    """Everything left on a subprocess's output stream until it closes, bounded."""
    buffered = _buffers.setdefault(id(stream), BufferedByteReceiveStream(stream))
    chunks = []
    with anyio.fail_after(timeout):
        try:
            while True:
                chunks.append(await buffered.receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            pass
    return b"".join(chunks).decode()


_buffers: dict[int, BufferedByteReceiveStream] = {}


async def eventually(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> None:
    """Wait, bounded, until ``predicate()`` holds: for state that has no event to wait on."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a plain attribute, there is no event
            await anyio.sleep(interval)


async def holds(predicate: Callable[[], bool], seconds: float = 0.3) -> None:
    """A bounded observation window: ``predicate()`` holds throughout ``seconds`` (checked every
    10 ms, failing at the first moment it does not): for "nothing more happens"."""
    with anyio.move_on_after(seconds):
        while True:
            assert predicate()
            await anyio.sleep(0.01)


async def holds_async(predicate: Callable[[], Awaitable[bool]], seconds: float = 0.3) -> None:
    """``holds`` for a predicate that asks ZooKeeper."""
    with anyio.move_on_after(seconds):
        while True:
            assert await predicate()
            await anyio.sleep(0.02)


async def eventually_async(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05
) -> None:
    """Wait, bounded, until ``await predicate()`` holds (it may ask ZooKeeper)."""
    with anyio.fail_after(timeout):
        while not await predicate():  # noqa: ASYNC110 - the state lives on the server
            await anyio.sleep(interval)


def gone(zk: Client, path: str) -> Callable[[], Awaitable[bool]]:
    """For ``eventually_async`` and ``holds_async``: ``path`` does not exist."""

    async def check() -> bool:
        return await zk.exists(path) is None

    return check


async def children(zk: Client, path: str) -> list[str]:
    """``path``'s children, sorted ([] while ``path`` does not exist)."""
    return sorted(await zk.children(path)) if await zk.exists(path) else []


def count_is(
    zk: Client, path: str, count: int, *, exactly: bool = False
) -> Callable[[], Awaitable[bool]]:
    """For ``eventually_async``: ``path`` has at least (``exactly``) ``count`` children."""

    async def check() -> bool:
        n = len(await children(zk, path))
        return n == count if exactly else n >= count

    return check


def build_wheel(dest: Path) -> Path:
    """Build the repository's wheel into ``dest`` (no dependencies) and return its path."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(root)],
        check=True,
        timeout=300,
    )
    (wheel,) = dest.glob("aiocoord-*.whl")
    return wheel


@asynccontextmanager
async def kazoo_client(zk_server: ZooKeeperServer, zk: Client) -> AsyncIterator[KazooClient]:
    """A started kazoo client in ``zk``'s namespace (the independent peer of interop tests),
    stopped on the way out (also when the test timed out)."""
    kazoo = KazooClient(hosts=zk_server.hosts + zk.namespace, timeout=10)
    await anyio.to_thread.run_sync(lambda: kazoo.start(timeout=15))
    try:
        yield kazoo
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(kazoo.stop)
        kazoo.close()
