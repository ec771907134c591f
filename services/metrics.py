"""Prometheus metrics and health endpoints for the services: ``--metrics-port PORT`` serves

- ``GET /metrics`` (and ``HEAD``): the text exposition format, version 0.0.4;
- ``GET /healthz``: 200 while the service's ZooKeeper session is live (connected), else 503;
- ``GET /readyz``: 200 while the session is live and the service is ready by its own measure
  (``Metrics.readiness``; each command's --help says what that is), else 503.

The metrics are prometheus-client's: counters, gauges and histograms the service updates, custom
collectors that read the values the recipes keep at scrape time (their ``counts``: nothing is
copied on the hot path), the process and Python-platform collectors, and
``aiocoord_build_info{version}``. Each service has a registry of its own.

The page is rendered here, from the registry's collectors, rather than by
``prometheus_client.generate_latest``: that writes values the Go way, a counter of 1,234,568 as
``1.234568e+06`` and a Unix timestamp as ``1.7954500123e+09``; here an integral value is written
as an integer and any other as the shortest exact decimal. The small HTTP server is kept (rather
than prometheus-client's ``start_http_server``, a WSGI server in a thread): it runs in the
service's task group, so it stops with the service, reports the port it bound (``--metrics-port
0`` in tests), and answers /healthz and /readyz from the event loop's own state.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence

import anyio
import anyio.abc
import prometheus_client
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

import aiocoord

log = logging.getLogger("aiocoord.metrics")

#: label values (in the collector's label order) -> value, read at scrape time
Read = Callable[[], Iterable[tuple[Sequence[str], float]]]
#: whether the service is ready, and why (or why not), in a few words
Readiness = Callable[[], tuple[bool, str]]

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# a counter's creation time as a series of its own: not part of the names this page promises
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class _Reading(Collector):
    """A counter or gauge family whose samples a function reads at scrape time."""

    def __init__(self, name: str, kind: str, help_text: str, labels: Sequence[str], read: Read):
        self._family = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}[kind]
        self._name, self._help, self._labels, self._read = name, help_text, list(labels), read

    def describe(self) -> Iterable[Metric]:
        return [self._family(self._name, self._help, labels=self._labels)]

    def collect(self) -> Iterable[Metric]:
        family = self._family(self._name, self._help, labels=self._labels)
        for values, value in self._read():
            family.add_metric(list(values), value)
        return [family]


class Metrics:
    """One service's metrics, liveness and readiness."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        prometheus_client.ProcessCollector(registry=self.registry)
        prometheus_client.PlatformCollector(registry=self.registry)
        prometheus_client.GCCollector(registry=self.registry)
        build = prometheus_client.Info("aiocoord_build", "the aiocoord version running",
                                       registry=self.registry)  # fmt: skip
        build.info({"version": aiocoord.__version__})
        up = self.gauge("aiocoord_up", "1 while the service runs", ["service"])
        up.labels(service).set(1)
        self._client: aiocoord.Client | None = None
        self._readiness: Readiness | None = None

    def counter(
        self, name: str, help_text: str, labels: Sequence[str] = ()
    ) -> prometheus_client.Counter:
        return prometheus_client.Counter(name, help_text, labels, registry=self.registry)

    def gauge(
        self, name: str, help_text: str, labels: Sequence[str] = ()
    ) -> prometheus_client.Gauge:
        return prometheus_client.Gauge(name, help_text, labels, registry=self.registry)

    def histogram(self, name: str, help_text: str) -> prometheus_client.Histogram:
        return prometheus_client.Histogram(name, help_text, buckets=BUCKETS, registry=self.registry)

    def collect(
        self, name: str, kind: str, help_text: str, read: Read, labels: Sequence[str] = ()
    ) -> None:
        """A ``kind`` ("counter" or "gauge") family read at scrape time by ``read``."""
        self.registry.register(_Reading(name, kind, help_text, labels, read))

    def watch_session(self, client: aiocoord.Client) -> None:
        """Count the session's state transitions; a gauge of the current state; /healthz."""
        self._client = client
        transitions = self.counter("aiocoord_session_transitions_total",
                                   "ZooKeeper session state transitions, by the state entered",
                                   ["state"])  # fmt: skip
        connected = self.gauge("aiocoord_session_connected", "1 while the session is usable")

        def on_event(event: aiocoord.SessionEvent) -> None:
            transitions.labels(event.state.value).inc()
            connected.set(1 if event.state.live else 0)

        client.add_listener(on_event)
        transitions.labels(client.state.value).inc()
        connected.set(1)

    def readiness(self, probe: Readiness) -> None:
        """What /readyz asks, besides a live session."""
        self._readiness = probe

    def live(self) -> tuple[bool, str]:
        if self._client is None:
            return True, "no ZooKeeper session to watch"
        state = self._client.state
        return state.live, f"session {state.value}"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live or self._readiness is None:
            return live, why
        return self._readiness()

    def render(self) -> bytes:
        return exposition(self.registry)

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the endpoints on ``host:port`` (0: any free port, reported to task_status)."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        log.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", host, bound)
        task_status.started(bound)
        async with listener:
            await listener.serve(self._handle)

    def answer(self, method: bytes, target: bytes) -> tuple[bytes, bytes, bytes]:
        """(status, content type, body) for a request: pure, so that tests can drive it."""
        path = target.split(b"?")[0]
        if path not in (b"/metrics", b"/healthz", b"/readyz"):
            return b"404 Not Found", b"text/plain", b"not found: try /metrics, /healthz, /readyz\n"
        if method not in (b"GET", b"HEAD"):
            return b"405 Method Not Allowed", b"text/plain", b"GET or HEAD\n"
        if path == b"/metrics":
            return b"200 OK", CONTENT_TYPE_PLAIN_0_0_4.encode(), self.render()
        ok, why = self.live() if path == b"/healthz" else self.ready()
        status = b"200 OK" if ok else b"503 Service Unavailable"
        return status, b"text/plain; charset=utf-8", f"{'ok' if ok else 'not ok'}: {why}\n".encode()

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
            method, target = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
            status, kind, body = self.answer(method, target)
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                status,
                kind,
                len(body),
            )
            if status.startswith(b"405"):
                head += b"Allow: GET, HEAD\r\n"
            head += b"Connection: close\r\n\r\n"
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(head if method == b"HEAD" else head + body)


def _number(value: float) -> str:
    """A sample's value, exactly and without an exponent where it is an integer."""
    value = float(value)  # (a collector may give an int or a bool)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer():
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: the family types of the 0.0.4 text format, and the suffix its samples' name takes
_TEXT_TYPES = {"counter": ("counter", "_total"), "info": ("gauge", "_info"),
               "stateset": ("gauge", ""), "unknown": ("untyped", "")}  # fmt: skip


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the text format, version 0.0.4 (see the module docstring)."""
    lines: list[str] = []
    for family in registry.collect():
        kind, suffix = _TEXT_TYPES.get(family.type, (family.type, ""))
        name = family.name + suffix
        lines.append(f"# HELP {name} {family.documentation.replace(chr(10), ' ')}")
        lines.append(f"# TYPE {name} {kind}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
            lines.append(
                f"{sample.name}{{{labels}}} {_number(sample.value)}"
                if labels
                else f"{sample.name} {_number(sample.value)}"
            )
    return ("\n".join(lines) + "\n").encode()


def add_metrics_option(parser: argparse.ArgumentParser, ready: str) -> None:
    """``--metrics-port`` and ``--metrics-host``; ``ready`` says when the service is ready."""
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (HOST from --metrics-host), "
        "/healthz (200 while the ZooKeeper session is live, else 503) and /readyz (200 while "
        f"the session is live and {ready}, else 503)",
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


def counts(values: Callable[[], Mapping[str, int]]) -> Read:
    """A ``Read`` of a recipe's ``counts`` dict as one labelled series."""
    return lambda: [((key,), float(value)) for key, value in values().items()]


class Leadership:
    """The ``aiocoord_leader`` gauge and ``aiocoord_leadership_changes_total`` counter, by
    election path: ``with leadership.term(path)`` counts a term while the block runs."""

    def __init__(self, metrics: Metrics) -> None:
        #: the election paths this process leads now
        self.leading: set[str] = set()
        self._leader = metrics.gauge(
            "aiocoord_leader", "1 while this process leads the election", ["path"]
        )
        self._changes = metrics.counter("aiocoord_leadership_changes_total",
                                        "leadership gained and lost, by election path",
                                        ["change", "path"])  # fmt: skip

    @contextlib.contextmanager
    def term(self, path: str) -> Iterator[None]:
        self._changes.labels("gained", path).inc()
        self._leader.labels(path).set(1)
        self.leading.add(path)
        try:
            yield
        finally:
            self.leading.discard(path)
            self._changes.labels("lost", path).inc()
            self._leader.labels(path).set(0)

    def readiness(self, election: aiocoord.Election) -> tuple[bool, str]:
        """Ready while a candidate of ``election``: leading it, or standing by."""
        if election.candidate_path is None:
            return False, f"not a candidate at {election.path} (joining, or resigned)"
        if election.path in self.leading:
            return True, f"leading {election.path}"
        return True, f"standing by at {election.path}"
