"""``holter anomalies`` and ``holter baselines``: what anomaly detection found and knows."""

from __future__ import annotations

import click

from holter.analysis.anomaly import find_anomalies
from holter.analysis.baseline import baselines
from holter.analysis.patterns import find_patterns, label
from holter.cli._options import (
    db_option,
    emit_json,
    fmt_num,
    fmt_tags,
    fmt_time,
    holter_errors,
    json_option,
    open_store,
    parse_tags,
    table,
)
from holter.store import query as q
from holter.store.anomalies import SEVERITIES


@click.command("anomalies")
@click.option("--window", "-w", default="24h", show_default=True,
              help="Time window: 1h, 24h, 7d ...")
@click.option("--metric", default=None, help="Only anomalies of this metric.")
@click.option("--tag", "-t", "tags", multiple=True, metavar="KEY=VALUE",
              help="Only series with this tag value (repeatable).")
@click.option("--min-severity", type=click.Choice(SEVERITIES), default="low", show_default=True,
              help="Leave out milder anomalies.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Newest anomalies to list (patterns use all of them).")
@click.option("--within", default="1m", show_default=True,
              help="How close in time anomalies of two series must be to count as together.")
@db_option
@json_option
@holter_errors
def anomalies_cmd(window: str, metric: str | None, tags: tuple[str, ...], min_severity: str,
                  limit: int, within: str, db: str, as_json: bool) -> None:
    """Anomalies found in the window, newest first, then the patterns among them.

    Each anomaly: when it started, the series and statistic, its kind (spike, dip,
    level shift, trend change, variance change), severity and score, the value at its
    most anomalous point, the expected value and the band of normal values. Patterns:
    recurring (with the period), trending (with a significance test) and correlated
    (series whose anomalies happen together), strongest evidence first.
    """
    start_ns, end_ns = q.time_range(window)
    within_s = q.parse_window(within) / 1e9
    with open_store(db) as store:
        found = find_anomalies(store, start=start_ns / 1e9, end=end_ns / 1e9, metric=metric,
                               tags=parse_tags(tags), min_severity=min_severity)
    patterns = find_patterns(found, start_ns, end_ns, within_s=within_s)
    shown = found[:limit]
    if as_json:
        emit_json({
            "window": window, "start_ns": start_ns, "end_ns": end_ns, "count": len(found),
            "anomalies": [a.as_dict() for a in shown],
            "patterns": [p.as_dict() for p in patterns],
        })
        return
    rows = []
    for a in shown:
        band = (f"{fmt_num(a.low, a.unit)} .. {fmt_num(a.high, a.unit)}"
                if a.low is not None and a.high is not None else "-")
        rows.append([
            fmt_time(a.time_ns), f"{a.metric} {fmt_tags(a.tags)}".replace(" -", ""), a.stat,
            a.kind.replace("_", " "), a.severity, f"{a.score:.2f}", fmt_num(a.value, a.unit),
            fmt_num(a.expected, a.unit), band, a.maturity,
        ])
    more = f" (newest {len(shown)} shown)" if len(found) > len(shown) else ""
    table(f"{len(found)} anomalies in the last {window}{more}",
          ["start", "series", "stat", "kind", "severity", "score", "value", "expected", "band",
           "maturity"], rows)
    if patterns:
        click.echo()
        table(f"{len(patterns)} patterns, strongest first", ["type", "pattern"],
              [[p.type, p.description] for p in patterns])
    elif found:
        click.echo("\nno recurring, trending or correlated pattern")


@click.command("baselines")
@click.option("--metric", default=None, help="Only baselines of this metric.")
@db_option
@json_option
@holter_errors
def baselines_cmd(metric: str | None, db: str, as_json: bool) -> None:
    """What each series is compared against, and how mature that baseline is.

    One line per series and statistic (rate, value, p50/p95/p99): maturity (warming:
    too few points to judge; learning: less than a day of history; mature),
    seasonality in use (none, daily, weekly), points seen, the expected value and
    band at the last point, the last value and its score.
    """
    with open_store(db) as store:
        found = baselines(store, metric=metric)
    if as_json:
        emit_json([b.as_dict() for b in found])
        return
    rows = []
    for b in found:
        if b.maturity == "warming":
            maturity = f"warming ({b.warming_points} more points)"
        elif b.maturity == "learning":
            maturity = f"learning ({b.mature_in_s / 3600:.1f} h to mature)"
        else:
            maturity = "mature"
        band = (f"{fmt_num(b.low, b.unit)} .. {fmt_num(b.high, b.unit)}"
                if b.low is not None and b.high is not None else "-")
        rows.append([
            label_of(b.metric, b.tags, b.stat), maturity, b.seasonality, str(b.points),
            fmt_num(b.expected, b.unit), band, fmt_num(b.last_value, b.unit),
            f"{b.last_score:.2f}" if b.last_score is not None else "-", fmt_time(b.updated_ns),
        ])
    table(f"{len(found)} baselines in {db}",
          ["series", "maturity", "seasonality", "points", "expected", "band", "last", "score",
           "updated"], rows)


def label_of(metric: str, tags: dict[str, str], stat: str) -> str:
    """``metric{tags}:stat`` for a table cell."""
    tag_text = ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
    return f"{metric}{{{tag_text}}}:{stat}" if tag_text else f"{metric}:{stat}"


__all__ = ["anomalies_cmd", "baselines_cmd", "label", "label_of"]
