"""Job metrics: values as the run moves, the HTTP endpoint, the Pushgateway push."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.errors import ConfigError, ConnectorError
from connector.observability.metrics import METRICS, JobMetrics


def values(metrics: JobMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: JobMetrics, name: str, **labels: str) -> float:
    return values(metrics)[(name, tuple(sorted(labels.items())))]


def test_progress_speed_and_lag_follow_the_run() -> None:
    m = JobMetrics(job="j", pipeline="p", executor="parallel")
    m.set_ranges([("t", 0, 10, 110), ("t", 1, 0, 100)])
    assert value(m, "restream_range_records") == 200
    assert value(m, "restream_partition_lag_records", topic="t", partition="0") == 100
    assert value(m, "restream_progress_ratio") == 0
    m.start_clock()
    m.records_read("t", 0, 60, next_offset=70)
    assert value(m, "restream_partition_lag_records", topic="t", partition="0") == 40
    m.epoch_done(50, 1_000_000, 1_000_000 + 3_600_000, {"read": 0.5, "phase 0": 1.0})
    assert value(m, "restream_events_processed_total") == 50
    assert value(m, "restream_events_read_total", topic="t") == 60
    assert value(m, "restream_progress_ratio") == pytest.approx(0.25)
    assert value(m, "restream_event_time_processed_seconds") == 3600
    assert value(m, "restream_watermark_timestamp_seconds") == pytest.approx(4600)
    elapsed = value(m, "restream_elapsed_seconds")
    assert value(m, "restream_replay_speedup") == pytest.approx(3600 / elapsed)
    assert value(m, "restream_eta_seconds") == pytest.approx(elapsed * 3)
    m.epoch_done(150, 1_000_000 + 3_600_000, 1_000_000 + 7_200_000, {"read": 0.7, "phase 0": 3})
    assert value(m, "restream_phase_seconds_total", phase="read") == pytest.approx(0.7)
    assert value(m, "restream_phase_seconds_total", phase="phase 0") == pytest.approx(3)
    assert value(m, "restream_epochs_total") == 2
    m.partition_done("t", 0)
    assert value(m, "restream_partition_lag_records", topic="t", partition="0") == 0
    m.bad_record("null-value", dead_lettered=True)
    m.bad_record("undecodable", dead_lettered=False)
    assert value(m, "restream_bad_records_total", reason="undecodable") == 1
    assert value(m, "restream_dead_letter_records_total", reason="null-value") == 1
    m.records_written("out", 7)
    assert value(m, "restream_output_records_total", topic="out") == 7
    m.finish(success=True)
    assert value(m, "restream_progress_ratio") == 1
    assert value(m, "restream_eta_seconds") == 0
    assert value(m, "restream_job_success") == 1
    snap = m.snapshot()
    assert snap.events == 200 and snap.done_ratio == 1 and snap.event_time_span_s == 7200


def test_every_exported_name_is_documented() -> None:
    m = JobMetrics(job="j", pipeline="p", executor="serial")
    exported = {family.name for family in m.registry.collect()}
    assert exported == set(METRICS)


def test_served_over_http_while_running() -> None:
    m = JobMetrics(job="j", pipeline="p", executor="serial")
    m.set_ranges([("t", 0, 0, 10)])
    server = m.serve(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        before = urllib.request.urlopen(url, timeout=5).read().decode()
        m.epoch_done(5, 0, 60_000, {})
        after = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        server.close()

    def sample(text: str, name: str) -> float:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name:
                    return float(s.value)
        raise AssertionError(name)

    assert sample(before, "restream_events_processed_total") == 0
    assert sample(after, "restream_events_processed_total") == 5
    assert sample(after, "restream_progress_ratio") == 0.5


def test_port_in_use_is_a_config_error() -> None:
    m = JobMetrics(job="j", pipeline="p", executor="serial")
    server = m.serve(0, "127.0.0.1")
    try:
        with pytest.raises(ConfigError, match="metrics_port"):
            m.serve(server.port, "127.0.0.1")
    finally:
        server.close()


class _Recorder(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    _Recorder.requests = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_push_to_gateway_records_final_values(gateway: str) -> None:
    m = JobMetrics(job="nightly", pipeline="p", executor="serial")
    m.set_ranges([("t", 0, 0, 3)])
    m.epoch_done(3, 0, 1000, {})
    m.finish(success=True)
    m.push(gateway, job="nightly")
    [(method, path, body)] = _Recorder.requests
    assert method == "PUT"
    assert path == "/metrics/job/restream/job_id/nightly"
    text = body.decode()
    assert "restream_job_success 1.0" in text
    assert "restream_events_processed_total 3.0" in text


def test_push_failure_is_an_error_naming_the_gateway() -> None:
    m = JobMetrics(job="j", pipeline="p", executor="serial")
    with pytest.raises(ConnectorError, match=r"127\.0\.0\.1:9"):
        m.push("http://127.0.0.1:9", job="j")


def test_the_readme_documents_every_metric() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[4] / "README.md").read_text(encoding="utf-8")
    m = JobMetrics(job="j", pipeline="p", executor="serial")
    for family in m.registry.collect():
        scraped = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{scraped}`" in readme, scraped


def test_stalls_are_counted_per_process() -> None:
    m = JobMetrics(job="j", pipeline="p", executor="parallel")
    m.stalled("sink")
    m.stalled("worker")
    m.stalled("worker")
    got = values(m)
    assert got[("restream_stalls_total", (("process", "worker"),))] == 2
    assert got[("restream_stalls_total", (("process", "sink"),))] == 1


def test_replay_speed_ignores_event_times_outside_1970_to_2200() -> None:
    """Records stamped -1 or in the year 9999 do not stretch the event-time span."""
    import numpy as np

    from connector.observability.metrics import event_time_bounds

    year_9999 = 253_402_300_799_000
    ts = np.array([-1, 1_700_000_000_000, year_9999, 1_700_000_600_000], dtype=np.int64)
    assert event_time_bounds(ts) == (1_700_000_000_000, 1_700_000_600_000)
    assert event_time_bounds(np.array([-1, year_9999], dtype=np.int64)) == (None, None)
    m = JobMetrics(job="j", pipeline="p", executor="parallel")
    m.start_clock()
    m.epoch_done(4, -1, year_9999, {})
    m.epoch_done(4, *event_time_bounds(ts), {})
    assert m.snapshot().event_time_span_s == 600.0
