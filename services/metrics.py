"""Prometheus metrics for the services: ``--metrics-port PORT`` serves ``GET /metrics`` in the
text exposition format (version 0.0.4).

Values are counters and gauges the service updates, histograms it observes into, and collectors
read at scrape time (the recipes keep their own ``counts``; nothing is copied on the hot path).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping

import anyio
import anyio.abc

import aiocoord

log = logging.getLogger("aiocoord.metrics")

Labels = tuple[tuple[str, str], ...]
#: (name, labels, value) read by a collector at scrape time
Sample = tuple[str, Mapping[str, str], float]

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(labels: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


class Metrics:
    """One service's metrics."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._kinds: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self._values: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, list[float]]] = {}  # bucket counts, sum, count
        self._collectors: list[Callable[[], Iterable[Sample]]] = []

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._kinds.setdefault(name, (kind, help_text))

    def inc(self, name: str, labels: Mapping[str, str] | None = None, amount: float = 1) -> None:
        series = self._values.setdefault(name, {})
        key = _labels(labels)
        series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self._values.setdefault(name, {})[_labels(labels)] = value

    def observe(self, name: str, seconds: float, labels: Mapping[str, str] | None = None) -> None:
        series = self._histograms.setdefault(name, {})
        counts = series.setdefault(_labels(labels), [0.0] * (len(BUCKETS) + 2))
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def collect(self, collector: Callable[[], Iterable[Sample]]) -> None:
        """Add samples read at scrape time (the names must be described)."""
        self._collectors.append(collector)

    def watch_session(self, client: aiocoord.Client) -> None:
        """Count the session's state transitions; a gauge of the current state."""
        self.describe("aiocoord_session_transitions_total", "counter",
                      "ZooKeeper session state transitions, by the state entered")  # fmt: skip
        self.describe("aiocoord_session_connected", "gauge", "1 while the session is usable")

        def on_event(event: aiocoord.SessionEvent) -> None:
            self.inc("aiocoord_session_transitions_total", {"state": event.state.value})
            self.set("aiocoord_session_connected", 1 if event.state.live else 0)

        client.add_listener(on_event)
        self.inc("aiocoord_session_transitions_total", {"state": client.state.value})
        self.set("aiocoord_session_connected", 1)

    def render(self) -> bytes:
        lines: list[str] = []
        collected: dict[str, dict[Labels, float]] = {}
        for collector in self._collectors:
            for name, sample_labels, value in collector():
                collected.setdefault(name, {})[_labels(sample_labels)] = value
        names = sorted(set(self._kinds) | set(self._values) | set(collected))
        for name in names:
            kind, help_text = self._kinds.get(name, ("untyped", name))
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "histogram":
                for labels, counts in sorted(self._histograms.get(name, {}).items()):
                    running = 0.0
                    for bound, count in zip((*BUCKETS, math.inf), counts, strict=False):
                        running += count
                        le = "+Inf" if bound == math.inf else repr(bound)
                        lines.append(
                            f"{name}_bucket{_render_labels((*labels, ('le', le)))} {running:g}"
                        )
                    lines.append(f"{name}_sum{_render_labels(labels)} {counts[-1]:g}")
                    lines.append(f"{name}_count{_render_labels(labels)} {running:g}")
                continue
            series = {**self._values.get(name, {}), **collected.get(name, {})}
            for labels, value in sorted(series.items()):
                lines.append(f"{name}{_render_labels(labels)} {value:g}")
        base = (("service", self.service),)
        lines.append("# HELP aiocoord_up 1 while the service runs")
        lines.append("# TYPE aiocoord_up gauge")
        lines.append(f"aiocoord_up{_render_labels(base)} 1")
        return ("\n".join(lines) + "\n").encode()

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``GET /metrics`` on ``host:port`` (0: any free port, reported to task_status)."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        task_status.started(bound)
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = b""
            with anyio.move_on_after(5):
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    try:
                        request += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
            parts = request.split(b"\r\n", 1)[0].split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                body, status = self.render(), b"200 OK"
                kind = b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, kind = b"not found: try /metrics\n", b"404 Not Found", b"text/plain"
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                status,
                kind,
                len(body),
            )
            head += b"Connection: close\r\n\r\n"
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(head + body)


def add_metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (HOST from --metrics-host)",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST",
        help="the address the metrics endpoint listens on (default 127.0.0.1)",
    )  # fmt: skip


@contextlib.asynccontextmanager
async def serving(
    args: argparse.Namespace, service: str, client: aiocoord.Client | None = None
) -> AsyncIterator[Metrics]:
    """The service's ``Metrics``, served while the block runs when ``--metrics-port`` is given."""
    metrics = Metrics(service)
    if client is not None:
        metrics.watch_session(client)
    if getattr(args, "metrics_port", None) is None:
        yield metrics
        return
    async with anyio.create_task_group() as tg:
        await tg.start(metrics.serve, args.metrics_host, args.metrics_port)
        try:
            yield metrics
        finally:
            tg.cancel_scope.cancel()


def counts(
    name: str, values: Callable[[], Mapping[str, int]], label: str
) -> Callable[[], Iterable[Sample]]:
    """A collector of a recipe's ``counts`` dict as one labelled series."""

    def collect() -> Iterable[Sample]:
        return [(name, {label: key}, float(value)) for key, value in values().items()]

    return collect


@contextlib.contextmanager
def leading(metrics: Metrics, path: str) -> Iterator[None]:
    """Count a leadership term of the election at ``path`` while the block runs."""
    metrics.describe("aiocoord_leader", "gauge", "1 while this process leads the election")
    metrics.describe("aiocoord_leadership_changes_total", "counter",
                     "leadership gained and lost, by election path")  # fmt: skip
    metrics.inc("aiocoord_leadership_changes_total", {"path": path, "change": "gained"})
    metrics.set("aiocoord_leader", 1, {"path": path})
    try:
        yield
    finally:
        metrics.inc("aiocoord_leadership_changes_total", {"path": path, "change": "lost"})
        metrics.set("aiocoord_leader", 0, {"path": path})
