"""Reports end to end: a recorded workload → `holter report` in each format, and its faults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from report_support import T0, S, record_service

import holter.testing
from holter.reports.build import build_report
from holter.reports.json import schema
from holter.store import query as q
from holter.store.sqlite import Store


def holter_cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holter", *args], capture_output=True,
                          text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> str:
    """`holter demo --duration 3`: a real recording with HTTP, sqlite, tools and traces."""
    db = str(tmp_path_factory.mktemp("demo") / "demo.db")
    proc = holter_cli("demo", "--duration", "3", "--quiet", "--db", db)
    assert proc.returncode == 0, proc.stderr
    return db


@pytest.fixture(scope="module")
def service_db(tmp_path_factory) -> tuple[str, int]:
    """Ten minutes of a small HTTP service on a fake clock (memory leak, 5xx, GC)."""
    db = str(tmp_path_factory.mktemp("svc") / "svc.db")
    end = record_service(db, minutes=10)
    return db, end


def validate(data: dict, name: str = "report") -> None:
    jsonschema.Draft202012Validator.check_schema(schema(name))
    jsonschema.validate(data, schema(name), cls=jsonschema.Draft202012Validator)


def test_json_report_of_the_demo_follows_the_schema(demo_db: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = holter_cli("report", "--db", demo_db, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    validate(data)
    assert data["schema_version"] == 1 and not data["empty"]
    assert [r["app"] for r in data["runs"]] == ["holter-demo"]
    names = {m["name"] for m in data["metrics"]}
    assert {"http.client.duration", "tool.duration", "db.query", "span.duration"} <= names
    http = [m for m in data["metrics"] if m["name"] == "http.client.duration"]
    assert all(m["p50"] <= m["p95"] <= m["p99"] for m in http if m["count"] > 1)
    # the same figures as a window query over the run
    store = Store.open(demo_db, create=False)
    try:
        run = q.runs(store)[0]
        merged = q.stats(store, "http.client.duration", start=data["scope"]["start_ns"] / 1e9,
                         end=data["scope"]["end_ns"] / 1e9, run=run.id)
    finally:
        store.close()
    assert sum(m["count"] for m in http) == merged.count
    ops = {o["name"]: o for o in data["operations"]}
    assert {"tool.search", "tool.bash", "http.client", "http.server"} <= set(ops)
    assert data["slowest_traces"], "the demo records traces"
    for trace in data["slowest_traces"]:
        # the path covers the root span; the trace may last longer (spans ending after it)
        total = sum(step["contribution_ns"] for step in trace["critical_path"])
        assert 0 < total <= trace["duration_ns"]
        assert all(0 <= step["share"] <= 1 for step in trace["critical_path"])
    for rec in data["recommendations"]:
        assert rec["evidence"]["value"] is not None and rec["evidence"]["metric"]
    assert data["summary"]["traces"] > 0


def test_markdown_report_is_plain_github_markdown(demo_db: str, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    proc = holter_cli("report", "--db", demo_db, "--charts", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("# holter report")
    for heading in ("## Summary", "## Recommendations", "## Operations", "## Slowest traces",
                    "## Metrics", "## Charts"):
        assert heading in text, heading
    assert "| ---" in text
    assert not re.search(r"<[A-Za-z/!]", text), "no HTML in the Markdown"
    assert re.search("[▁▂▃▄▅▆▇█]", text), "--charts adds sparklines"
    assert "route=/users/\\{id\\}" in text or "route=/users/{id}" in text


def test_html_report_is_one_self_contained_file(demo_db: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    proc = holter_cli("report", "--db", demo_db, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert "uPlot" in html and "Content-Security-Policy" in html
    assert not re.search(r"<(link|iframe|object|embed)\b", html)
    assert not re.search(r"\b(src|href)\s*=", html), "nothing is loaded from elsewhere"
    assert "connect-src 'none'" in html
    assert html.count("<script>") == 2  # uPlot and the page's own script
    assert 'data-chart="0"' in html
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_stdout_and_format_option(demo_db: str) -> None:
    proc = holter_cli("report", "--db", demo_db, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    validate(json.loads(proc.stdout))
    proc = holter_cli("report", "--db", demo_db)
    assert proc.returncode == 0 and proc.stdout.startswith("# holter report")


def test_recommendations_name_the_series_and_the_figure(service_db) -> None:
    db, end = service_db
    store = Store.open(db, create=False)
    try:
        report = build_report(store, period="1h", now_ns=end + S)
    finally:
        store.close()
    by_rule: dict = {}
    for rec in report.recommendations:
        by_rule.setdefault(rec.rule, []).append(rec)
    growth = by_rule["memory_growth"][0]
    # 200 kB per 10 s = 72 MB/h, on a straight line
    assert growth.evidence.value == pytest.approx(72e6, rel=0.05)
    assert growth.subject == "process.memory.rss" and "per hour" in growth.title
    gc = by_rule["gc_pause"][0]
    assert gc.evidence.value == pytest.approx(0.03, rel=0.1)  # 5 × 60 ms per 10 s
    errors = by_rule["http_errors"][0]
    assert "/orders" in errors.subject and errors.evidence.value > 0.05
    tails = by_rule["long_tail"]
    assert all(t.evidence.value >= 10 for t in tails)
    assert all(r.evidence.value is not None for r in report.recommendations)
    assert "cpu_bound" not in by_rule  # 35 % of a core is not CPU-bound


def test_json_from_code_validates_and_monitor_report(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db, app="code") as mon:
        for i in range(12):
            mon.histogram("job.duration", unit="s").observe(0.1 + i / 100, job="a")
            mon.counter("jobs").inc(job="a")
            clock.advance(10)
            mon.flush()
        text = mon.report(period="1h", format="json")
        validate(json.loads(text))
        written = mon.report(period="1h", output=str(tmp_path / "r.html"))
        assert (tmp_path / "r.html").read_text() == written
        assert "job.duration" in written


def test_empty_period_and_unknown_run_say_so(demo_db: str, tmp_path: Path) -> None:
    proc = holter_cli("report", "--db", demo_db, "--since", "2001-01-01T00:00:00",
                      "--until", "2001-01-02T00:00:00", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    validate(data)
    assert data["empty"] and data["notes"] and data["metrics"] == []
    proc = holter_cli("report", "--db", demo_db, "--run", "9999", "-o",
                      str(tmp_path / "unknown.html"))
    assert proc.returncode == 0, proc.stderr
    assert "no run with id 9999" in (tmp_path / "unknown.html").read_text()
    proc = holter_cli("report", "--db", demo_db, "--run", "9999", "--format", "json")
    data = json.loads(proc.stdout)
    validate(data)
    assert data["empty"] and "no run with id 9999" in data["notes"][0]


@pytest.mark.parametrize("where", ["missing-dir/report.html", "/proc/holter-report.html",
                                   "report.txt", "a-directory"])
def test_bad_output_path_is_one_line_and_leaves_nothing(demo_db: str, tmp_path: Path,
                                                        where: str) -> None:
    (tmp_path / "a-directory").mkdir()
    target = where if where.startswith("/") else str(tmp_path / where)
    before = sorted(os.listdir(tmp_path))
    proc = holter_cli("report", "--db", demo_db, "-o", target)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("holter: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == before
    assert not os.path.exists("/proc/holter-report.html")


def test_bad_inputs_are_one_line_errors(demo_db: str) -> None:
    for args in (["--period", "soon"], ["--period", "1h", "--since", "2h"],
                 ["--since", "yesterday-ish"], ["--format", "pdf"]):
        proc = holter_cli("report", "--db", demo_db, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_anomalies_patterns_and_alerts_appear_when_recorded(tmp_path: Path) -> None:
    db = str(tmp_path / "alerting.db")

    def rules(mon) -> None:
        mon.alert("slow-api", "p95(http.server.duration) > 0.01", window="1m",
                  severity="critical", summary="p95 is {value:.3f} s")

    end = record_service(db, minutes=5, setup=rules)
    store = Store.open(db, create=False)
    try:
        report = build_report(store, period="1h", now_ns=end + S)
        bare = build_report(Store.open(str(_bare_store(tmp_path)), create=False), period="1h",
                            now_ns=T0 + 3600 * S)
    finally:
        store.close()
    assert report.anomalies is not None and report.patterns is not None
    assert report.alerts, "the rule fired"
    assert report.alerts[0]["rule"] == "slow-api" and report.alerts[0]["state"] == "firing"
    assert any(r.rule == "alert" for r in report.recommendations)
    assert any(m.kind == "alert" for chart in report.charts for m in chart.marks)
    validate(report.as_dict())
    # a store where no detector or rule ever ran has no such sections, not empty fakes
    assert bare.anomalies is None and bare.alerts is None and bare.patterns is None
    validate(bare.as_dict())


def _bare_store(tmp_path: Path) -> Path:
    from holter.config import Config
    from holter.monitor import Monitor

    path = tmp_path / "bare.db"
    with holter.testing.FakeClock(start_ns=T0) as clock:
        mon = Monitor(Config.resolve(app="bare", db=str(path), strict=True, anomalies=False),
                      start=False)
        try:
            mon.counter("jobs").inc()
            clock.advance(10)
            mon.flush()
        finally:
            mon.stop()
    return path
