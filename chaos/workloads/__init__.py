"""The workloads of the campaign: each starts its client processes, may drive operations from the
controller, reads the final state once the faults are healed, and checks its history."""

from __future__ import annotations

from .base import Context, Report, Workload
from .config import ConfigWorkload
from .counter import CounterWorkload
from .discovery import DiscoveryWorkload
from .election import ElectionWorkload
from .locks import LockWorkload, SemaphoreWorkload
from .session import SessionWorkload
from .tasks import TasksWorkload

WORKLOADS: dict[str, type[Workload]] = {
    "session": SessionWorkload,
    "election": ElectionWorkload,
    "tasks": TasksWorkload,
    "config": ConfigWorkload,
    "discovery": DiscoveryWorkload,
    "lock": LockWorkload,
    "semaphore": SemaphoreWorkload,
    "counter": CounterWorkload,
}

__all__ = ["WORKLOADS", "Context", "Report", "Workload"]
