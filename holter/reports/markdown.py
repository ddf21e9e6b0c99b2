"""Markdown for GitHub: headings, lists and pipe tables, no HTML; every data string escaped.

With ``--charts`` each metric row gets a Unicode sparkline of its trend (count per
step for counters, mean for gauges, p95 for histograms) and each chart of the HTML
report a sparkline per line with its range.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from holter.reports import fmt
from holter.reports.base import Renderer
from holter.reports.model import Report

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$&])")
MAX_METRIC_ROWS = 200
"""Metric rows shown in Markdown (the busiest); the JSON has them all."""


def escape(text: object) -> str:
    """``text`` safe in Markdown prose and table cells: specials backslash-escaped, one line.

    Every ASCII punctuation character Markdown or GitHub gives a meaning to (emphasis,
    links, HTML tags, tables, autolinks, maths) is escaped, so data never becomes markup.
    """
    one_line = " ".join(str(text).split())
    out = _SPECIAL.sub(r"\\\1", one_line)
    # GitHub turns bare URLs and www. names into links; an entity stops that, without HTML
    return out.replace("://", "&#58;//").replace("www.", "www&#46;")


def code(text: object) -> str:
    """``text`` as inline code (for ids), falling back to escaping when it has backticks."""
    value = " ".join(str(text).split())
    if "`" in value or not value:
        return escape(value)
    return f"`{value}`"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A GitHub pipe table; ``right`` are the indexes of right-aligned (numeric) columns."""
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if i in right else "---" for i in range(len(header)))
             + " |"]
    lines.extend("| " + " | ".join(cell or " " for cell in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


class MarkdownRenderer(Renderer):
    """GitHub-flavoured Markdown (tables, lists, no HTML)."""

    output_file_extension = "md"

    def render(self, data: Any) -> str:
        """The document for a Report or a Comparison."""
        if isinstance(data, Report):
            return "\n".join(_report(data)).rstrip() + "\n"
        from holter.reports.compare import Comparison

        if isinstance(data, Comparison):
            return "\n".join(_comparison(data)).rstrip() + "\n"
        raise TypeError(f"cannot render {type(data).__name__} as Markdown")


def _scope_line(r: Report) -> str:
    s = r.scope
    parts = [f"{fmt.when(s.start_ns)} → {fmt.when(s.end_ns)}"]
    if s.period:
        parts.append(f"last {escape(s.period)}")
    if s.run is not None:
        parts.append(f"run {s.run}")
    if s.app:
        parts.append(f"app {escape(s.app)}")
    return " · ".join(parts)


def _report(r: Report) -> list[str]:
    out = [f"# {escape(r.title)}", "", f"**Period:** {_scope_line(r)}  ",
           f"**Store:** {escape(r.scope.store)} · generated {fmt.when(r.generated_ns)} by "
           f"holter {escape(r.holter_version)}", ""]
    for note in r.notes:
        out += [f"> **Note:** {escape(note)}", ""]
    if r.empty:
        out += ["Nothing was recorded in this period.", ""]
        return out
    s = r.summary
    out += ["## Summary", "",
            f"- **{s.runs}** run(s), **{fmt.seconds(s.recorded_s)}** recorded",
            f"- **{s.series}** series, **{fmt.num(s.observations)}** timed observations",
            f"- **{s.traces}** traces ({s.traces_with_errors} with errors), mean duration "
            f"{fmt.seconds(s.mean_trace_duration_ns / 1e9 if s.mean_trace_duration_ns else None)}",
            f"- **{s.operations}** operations, {s.span_errors} span errors"]
    if s.anomalies is not None:
        out.append(f"- **{s.anomalies}** anomalies")
    if s.alerts is not None:
        out.append(f"- **{s.alerts}** alerts fired")
    out += ["", "## Recommendations", ""]
    if not r.recommendations:
        out += ["No finding crossed a threshold in this period.", ""]
    for i, rec in enumerate(r.recommendations, 1):
        e = rec.evidence
        value = fmt.percent(e.value) if e.unit == "ratio" else fmt.num(e.value, e.unit)
        limit = fmt.percent(e.threshold) if e.unit == "ratio" else fmt.num(e.threshold, e.unit)
        out += [f"{i}. **{escape(rec.severity)}: {escape(rec.title)}**  ",
                f"   Evidence: {escape(e.figure)} of {code(e.metric)}"
                + (f" {escape(fmt.tags(e.tags))}" if e.tags else "")
                + f" = {escape(value)} (threshold {escape(limit)}).  ",
                f"   Look at: {escape(rec.look_at)}"]
    out.append("")
    out += _runs(r) + _operations(r) + _traces(r) + _resources(r)
    out += _optional(r) + _metrics(r) + _charts(r)
    return out


def _runs(r: Report) -> list[str]:
    rows = [[str(run["id"]), escape(run["app"]), escape(run["host"]), str(run["pid"]),
             fmt.when(run["started_ns"]), fmt.seconds(run["duration_s"]),
             "running" if run["ended_ns"] is None else escape(run["exit_status"])]
            for run in r.runs]
    return ["## Runs", "", table(["id", "app", "host", "pid", "start", "duration", "exit"],
                                 rows, right=(0, 3, 5))]


def _operations(r: Report) -> list[str]:
    rows = [[code(o.name), fmt.num(o.count), fmt.num(o.rate), f"{o.errors}",
             fmt.percent(o.error_rate), fmt.seconds(o.p50_s), fmt.seconds(o.p95_s),
             fmt.seconds(o.p99_s), fmt.seconds(o.self_mean_s)] for o in r.operations]
    note = (f"Self time and errors from the {r.operations_sampled_traces} newest stored traces."
            if r.operations else "")
    return ["## Operations", "", table(
        ["operation", "count", "rate/s", "errors", "error rate", "p50", "p95", "p99",
         "self (mean)"], rows, right=tuple(range(1, 9))), note, ""]


def _traces(r: Report) -> list[str]:
    rows = []
    for t in r.slowest_traces:
        path = " → ".join(f"{escape(p.name)} {fmt.percent(p.share)}"
                          for p in sorted(t.critical_path, key=lambda p: -p.contribution_ns)[:3])
        rows.append([code(t.trace_id), escape(t.root_name), fmt.seconds(t.duration_ns / 1e9),
                     str(t.spans), str(t.errors), path or "-"])
    return ["## Slowest traces", "", table(
        ["trace", "root", "duration", "spans", "errors", "critical path (top shares)"], rows,
        right=(2, 3, 4)), ""]


def _resources(r: Report) -> list[str]:
    rows = [[escape(x.label), code(x.metric), fmt.num(x.mean, x.unit), fmt.num(x.peak, x.unit),
             fmt.when(x.peak_ns) if x.peak_ns else "-"] for x in r.resources]
    return ["## System resources", "", table(["figure", "metric", "mean", "peak", "peak at"],
                                             rows, right=(2, 3)), ""]


def _optional(r: Report) -> list[str]:
    out: list[str] = []
    if r.anomalies is not None:
        rows = [[fmt.when(a.get("time_ns")), code(a.get("metric", "")),
                 escape(fmt.tags(a.get("tags") or {})), escape(a.get("stat", "")),
                 escape(a.get("kind", "")), escape(a.get("severity", "")),
                 fmt.num(a.get("value"), a.get("unit", "")),
                 fmt.num(a.get("expected"), a.get("unit", ""))] for a in r.anomalies]
        out += ["## Anomalies", "", table(["start", "metric", "tags", "stat", "kind", "severity",
                                           "value", "expected"], rows, right=(6, 7)), ""]
    if r.patterns is not None:
        rows = [[escape(p.get("type", "")), escape(p.get("description", "")),
                 f"{p.get('p_value', 0):.2g}"] for p in r.patterns]
        out += ["## Patterns", "", table(["type", "pattern", "p-value"], rows, right=(2,)), ""]
    if r.alerts is not None:
        rows = [[escape(a.get("rule", "")), escape(a.get("state", "")),
                 escape(fmt.tags(a.get("labels") or {})), fmt.when(a.get("fired_ns")),
                 fmt.when(a.get("resolved_ns")), fmt.num(a.get("value"))] for a in r.alerts]
        out += ["## Alerts", "", table(["rule", "state", "labels", "fired", "resolved",
                                        "value"], rows, right=(5,)), ""]
    return out


def _metrics(r: Report) -> list[str]:
    metrics = sorted(r.metrics, key=lambda m: -(m.count or 0))[:MAX_METRIC_ROWS]
    metrics.sort(key=lambda m: (m.name, fmt.tags(m.tags)))
    spark = any(m.sparkline for m in metrics)
    rows = []
    for m in metrics:
        if m.kind == "histogram":
            figures = [fmt.num(m.p50, m.unit), fmt.num(m.p95, m.unit), fmt.num(m.p99, m.unit),
                       fmt.num(m.max, m.unit)]
        elif m.kind == "gauge":
            figures = [fmt.num(m.mean, m.unit), "-", "-", fmt.num(m.max, m.unit)]
        else:
            figures = ["-", "-", "-", "-"]
        row = [code(m.name), escape(fmt.tags(m.tags)) or "-", m.kind, fmt.num(m.count),
               fmt.num(m.rate), *figures]
        if spark:
            row.append(escape(fmt.sparkline(m.sparkline or [])) or "-")
        rows.append(row)
    header = ["metric", "tags", "kind", "count", "rate/s", "p50 / mean", "p95", "p99", "max"]
    if spark:
        header.append("trend")
    out = ["## Metrics", "", table(header, rows, right=tuple(range(3, 9)))]
    if len(r.metrics) > len(metrics):
        out.append(f"The {len(metrics)} busiest of {len(r.metrics)} series; the JSON report "
                   "has them all.")
    out.append("")
    return out


def _charts(r: Report) -> list[str]:
    if not r.charts or not any(m.sparkline for m in r.metrics):
        return []
    out = ["## Charts", ""]
    for chart in r.charts:
        out += [f"**{escape(chart.title)}** ({fmt.when(chart.times_ns[0])} → "
                f"{fmt.when(chart.times_ns[-1])})", ""]
        for line in chart.lines:
            got = [v for v in line.values if v is not None]
            if not got:
                continue
            out.append(f"- {escape(line.label)}: `{fmt.sparkline(line.values)}` "
                       f"{escape(fmt.num(min(got), chart.unit))} … "
                       f"{escape(fmt.num(max(got), chart.unit))}")
        for mark in chart.marks:
            out.append(f"- {escape(mark.kind)} {escape(mark.label)}: {fmt.when(mark.start_ns)} "
                       f"→ {fmt.when(mark.end_ns)}")
        out.append("")
    return out


def _comparison(c: Any) -> list[str]:
    from holter.reports.compare import markdown_lines

    return markdown_lines(c, escape=escape, code=code, table=table)


__all__ = ["MarkdownRenderer", "code", "escape", "table"]
