"""Task handlers the worker processes of the task tests load with ``--handler``."""

from __future__ import annotations

import os

import anyio
import anyio.lowlevel

from aiocoord import Task


async def tagged(task: Task) -> bytes:
    """The payload, tagged with the worker that ran it."""
    await anyio.lowlevel.checkpoint()
    return task.payload + b" by " + task.worker.encode()


async def sleepy(task: Task) -> bytes:
    """Sleeps for the payload's first word (seconds), then as ``tagged``."""
    await anyio.sleep(float(task.payload.split()[0]))
    return await tagged(task)


async def crash_on_poison(task: Task) -> bytes:
    """A payload of ``poison`` kills the worker process outright (as a segfault would)."""
    if task.payload == b"poison":
        os._exit(3)
    return await tagged(task)
