"""Running a service: uvloop when installed, SIGTERM/SIGINT turned into graceful cancellation."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc

__all__ = ["run"]

T = TypeVar("T")
log = logging.getLogger("aiocoord")


def run(main: Callable[..., Awaitable[T]], *args: Any, use_uvloop: bool = True) -> T | None:
    """Run ``main(*args)`` to completion on a new event loop and return its result.

    SIGTERM and SIGINT cancel ``main``: its ``async with`` blocks exit (resign, deregister, close
    the session) and ``run`` returns None. An exception of ``main`` is raised as it is (not
    wrapped in an exception group), so ``except aiocoord.ConnectError`` around ``run`` works.
    uvloop is used when installed and ``use_uvloop``.
    """
    stopped: list[int] = []

    async def guarded() -> T | None:
        result: list[T] = []

        async def on_signal(tg: anyio.abc.TaskGroup) -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("%s received: shutting down", signal.Signals(signum).name)
                    stopped.append(signum)
                    tg.cancel_scope.cancel()
                    return

        async def body(tg: anyio.abc.TaskGroup) -> None:
            result.append(await main(*args))
            tg.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(on_signal, tg)
                tg.start_soon(body, tg)
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # main's own (on_signal does not raise)
                # as it is: not ``raise ... from None``, which overwrites its __cause__ (and
                # makes the group its hidden __context__)
                exc = group.exceptions[0]
                chain = exc.__cause__, exc.__context__, exc.__suppress_context__
                try:
                    raise exc
                finally:
                    exc.__cause__, exc.__context__, exc.__suppress_context__ = chain
                    del exc, chain
            raise  # pragma: no cover
        return result[0] if result else None

    backend_options: dict[str, Any] = {}
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
            pass
        else:
            backend_options["use_uvloop"] = True
    return anyio.run(guarded, backend="asyncio", backend_options=backend_options)
