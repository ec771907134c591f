"""The metrics page rendered from prometheus-client's registry, without a server: exact values
(no exponent for large counters or Unix timestamps), parsed back by prometheus-client's own
parser, and the answers of the metrics port's paths and methods."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from services.metrics import Metrics


def test_large_counters_and_timestamps_render_exactly() -> None:
    metrics = Metrics("worker")
    metrics.counter("aiocoord_big_total", "a busy counter", ["outcome"]).labels("ok").inc(1234568)
    now = time.time()
    metrics.gauge("aiocoord_applied_at_seconds", "a Unix timestamp").set(now)
    metrics.collect("aiocoord_read_total", "counter", "read at scrape time",
                    lambda: [(("x",), 9007199254740992)], ["kind"])  # fmt: skip
    text = metrics.render().decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines['aiocoord_big_total{outcome="ok"}'] == "1234568"
    assert lines["aiocoord_applied_at_seconds"] == repr(now) and "e" not in repr(now)
    assert lines['aiocoord_read_total{kind="x"}'] == "9007199254740992"
    assert float(lines["process_start_time_seconds"]) > 1e9
    assert "e+" not in lines["process_start_time_seconds"]
    assert lines['aiocoord_up{service="worker"}'] == "1"
    parsed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert parsed[("aiocoord_big_total", (("outcome", "ok"),))] == 1234568
    assert parsed[("aiocoord_applied_at_seconds", ())] == now
    assert parsed[("aiocoord_build_info", (("version", __import__("aiocoord").__version__),))] == 1


def test_histograms_keep_their_buckets() -> None:
    metrics = Metrics("worker")
    seconds = metrics.histogram("aiocoord_task_seconds", "handler run time per task")
    for value in (0.002, 0.3, 45.0):
        seconds.observe(value)
    (family,) = [
        f
        for f in text_string_to_metric_families(metrics.render().decode())
        if f.name == "aiocoord_task_seconds"
    ]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["0.001"] == 0 and buckets["0.0025"] == 1 and buckets["0.5"] == 2
    assert buckets["+Inf"] == 3
    count = next(s.value for s in family.samples if s.name == "aiocoord_task_seconds_count")
    assert count == 3


def test_paths_and_methods() -> None:
    metrics = Metrics("elect")
    status, kind, body = metrics.answer(b"GET", b"/metrics?x=1")
    assert status == b"200 OK" and kind.startswith(b"text/plain; version=0.0.4") and body
    assert metrics.answer(b"HEAD", b"/metrics")[0] == b"200 OK"
    assert metrics.answer(b"POST", b"/metrics")[0] == b"405 Method Not Allowed"
    assert metrics.answer(b"GET", b"/")[0] == b"404 Not Found"
    assert metrics.answer(b"GET", b"/healthz")[0] == b"200 OK"  # no session to watch
    metrics.readiness(lambda: (False, "not a candidate"))
    assert metrics.answer(b"GET", b"/readyz") == (
        b"503 Service Unavailable",
        b"text/plain; charset=utf-8",
        b"not ok: not a candidate\n",
    )
    metrics.readiness(lambda: (True, "standing by"))
    assert metrics.answer(b"GET", b"/readyz")[0] == b"200 OK"
