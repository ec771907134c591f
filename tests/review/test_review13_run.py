"""Review 13: ``aiocoord.run()`` raises main's exception as it is: its cause chain included."""

from __future__ import annotations

import anyio
import pytest

import aiocoord


class _Failed(Exception):
    pass


def test_run_keeps_the_cause_of_mains_exception() -> None:
    async def main() -> None:
        await anyio.lowlevel.checkpoint()
        try:
            raise KeyError("root cause")
        except KeyError as exc:
            raise _Failed("main failed") from exc

    with pytest.raises(_Failed) as info:
        aiocoord.run(main)
    assert isinstance(info.value.__cause__, KeyError)
    assert not isinstance(info.value.__context__, BaseExceptionGroup)


def test_run_keeps_the_context_of_mains_exception() -> None:
    async def main() -> None:
        await anyio.lowlevel.checkpoint()
        try:
            raise KeyError("while handling this")
        except KeyError:
            raise _Failed("main failed")  # noqa: B904 - the implicit context is the point

    with pytest.raises(_Failed) as info:
        aiocoord.run(main, use_uvloop=False)
    assert isinstance(info.value.__context__, KeyError)
    assert not info.value.__suppress_context__
