"""Latency samples as the tables report them."""

from __future__ import annotations

import statistics


def latency(samples: list[float]) -> dict[str, float]:
    """Count, p50, p99 and max of samples in seconds, as milliseconds."""
    s = sorted(samples)
    return {
        "n": len(s),
        "p50_ms": statistics.median(s) * 1000,
        "p99_ms": s[max(0, int(len(s) * 0.99) - 1)] * 1000,
        "max_ms": s[-1] * 1000,
    }
