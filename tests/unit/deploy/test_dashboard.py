"""deploy/grafana/restream-dashboard.json: a well-formed dashboard that shows what issue 7
asks for (restarts and checkpoints included), using only metric names that the code exports,
with the suffixes a scrape gives."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from connector.observability.metrics import METRICS, JobMetrics
from tests.support.deploy import DEPLOY

DASHBOARD: dict[str, Any] = json.loads((DEPLOY / "grafana" / "restream-dashboard.json").read_text())
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
#: What a scrape shows for each kind of metric family (prometheus_client's exposition).
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "info": ("_info",),
}


def _panels() -> Iterator[dict[str, Any]]:
    for panel in DASHBOARD["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _expressions() -> Iterator[str]:
    for panel in _panels():
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in DASHBOARD["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield query["query"]
        elif variable["type"] == "query":
            yield str(query)


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\brestream_[a-z0-9_]+\b", expr))


def _strip(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _scrape_names() -> set[str]:
    """Every sample name that scraping a job's metrics can show."""
    metrics = JobMetrics(job="job", pipeline="social-spam", executor="parallel")
    names = set()
    for family in metrics.registry.collect():
        names |= {family.name + suffix for suffix in _SAMPLE_SUFFIXES[family.type]}
    return names


def test_dashboard_is_well_formed() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    assert isinstance(DASHBOARD["schemaVersion"], int)
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # "All" must match series without a job_id label too (plain manifests add none).
    assert variables["job_id"]["allValue"] == ".*"


def test_panels_do_not_overlap() -> None:
    cells: Counter[tuple[int, int]] = Counter()
    for panel in _panels():
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                cells[(x, y)] += 1
    assert max(cells.values()) == 1


def test_every_metric_name_is_exported_by_the_code() -> None:
    used = set().union(*(_metric_names(e) for e in _expressions()))
    assert len(used) >= 15
    for name in sorted(used):
        assert _strip(name) in METRICS, (
            f"{name}: connector.observability.metrics.METRICS has no {_strip(name)}"
        )


def test_every_metric_name_is_spelled_as_scraped() -> None:
    """A counter is only found with _total, a histogram only with _bucket/_sum/_count."""
    scraped = _scrape_names()
    assert {_strip(n) for n in scraped if n.startswith("restream_")} == set(METRICS)
    for expr in _expressions():
        for name in _metric_names(expr):
            assert name in scraped, f"{name} in {expr!r} is not a scraped series name"


#: The selector of every query: the chosen jobs; counts over the time range leave out the
#: Pushgateway's copy of a run (no instance label), which would count that run twice.
_SELECTORS = {'{job_id=~"$job_id"}', '{job_id=~"$job_id", instance!=""}'}


def test_every_query_selects_the_chosen_jobs() -> None:
    for panel in _panels():
        for target in panel.get("targets", []):
            for selector in re.findall(r"restream_[a-z0-9_]+(\{[^}]*\}|)", target["expr"]):
                assert selector in _SELECTORS, (panel["title"], target["expr"])


@pytest.mark.parametrize(
    ("what", "metric"),
    [
        ("replay speed relative to real time", "restream_replay_speedup"),
        ("events/s", "restream_events_per_second"),
        ("events/s", "restream_events_processed_total"),
        ("percent done", "restream_progress_ratio"),
        ("ETA", "restream_eta_seconds"),
        ("lag per partition", "restream_partition_lag_records"),
        ("time per phase", "restream_phase_seconds_total"),
        ("dead-lettered records", "restream_dead_letter_records_total"),
        ("restarts", "restream_resumes_total"),
        ("where a restart resumed", "restream_resumed_from_seq"),
        ("checkpoints written", "restream_checkpoints_total"),
        ("checkpoint duration", "restream_checkpoint_duration_seconds_bucket"),
        ("checkpoint size", "restream_checkpoint_bytes"),
        ("damaged checkpoints", "restream_checkpoints_damaged_total"),
        ("output skipped as already written", "restream_output_skipped_records_total"),
        ("broker errors retried", "restream_broker_errors_total"),
        ("processes stopped by the watchdog", "restream_stalls_total"),
    ],
)
def test_dashboard_shows_what_the_issue_asks_for(what: str, metric: str) -> None:
    assert any(metric in _metric_names(e) for e in _expressions()), what


def test_lag_is_shown_per_partition() -> None:
    (lag,) = [p for p in _panels() if p["title"] == "Lag per partition"]
    (target,) = lag["targets"]
    assert "by (job_id, topic, partition)" in target["expr"]
    assert "{{topic}}/{{partition}}" in target["legendFormat"]


def _panel(title: str) -> dict[str, Any]:
    (panel,) = [p for p in _panels() if p["title"] == title]
    return panel


def test_restarts_panel_counts_resumed_pods() -> None:
    """Issue 7's "worker restarts": restream does not restart workers in-process (a dead worker
    fails the run, the Job's next pod resumes from the checkpoint), so the restarts panel counts
    runs that resumed (restream_resumes, 1 in such a run) over the time range, even those whose
    pod is gone, and shows where the latest resumed."""
    panel = _panel("Restarts (pod resumed from checkpoint)")
    exprs = {t["legendFormat"]: t["expr"] for t in panel["targets"]}
    assert exprs["{{job_id}} restarts"] == (
        'sum by (job_id) (max_over_time(restream_resumes_total{job_id=~"$job_id", '
        'instance!=""}[$__range]))'
    )
    assert "restream_resumed_from_seq" in exprs["{{job_id}} resumed at seq"]
    # Should the code ever export a metric about restarts, the dashboard must show it too.
    shown = set().union(*(_metric_names(e) for e in _expressions()))
    for name in METRICS:
        if "restart" in name or "resume" in name:
            assert any(_strip(s) == name for s in shown), f"{name} is on no panel"


def test_histograms_are_aggregated_by_bucket() -> None:
    """histogram_quantile needs the rate of the _bucket series, summed keeping le."""
    quantiles = [e for e in _expressions() if "histogram_quantile" in e]
    assert any("restream_checkpoint_duration_seconds_bucket" in e for e in quantiles)
    for expr in quantiles:
        assert re.fullmatch(
            r"histogram_quantile\(0\.\d+, sum by \((job_id, )?le\) \(rate\(restream_\w+_bucket"
            r"\{[^}]*\}\[\$__rate_interval\]\)\)\)",
            expr,
        ), expr
