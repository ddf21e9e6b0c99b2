"""Compare two runs, or a baseline set of runs and a run: what changed, and is it real.

Per series (and per operation, the ``span.duration{name}`` series) the change in p50,
p95, p99 and rate from side A (the baseline) to side B. A change is *significant*
only when every test below agrees, so noise is not reported as a regression:

* **Quantiles** (histograms): the exceedance test. Of B's observations, the share
  above A's p-quantile should be ``1 - p`` if nothing changed; the observed count is
  compared with that binomial expectation, its variance widened by ``1 + n_B / n_A``
  for the uncertainty of A's own quantile (normal approximation, two-sided). Counts
  come from the sketches, so ties inside one sketch bucket (0.54 % wide) count half.
* **Rate** (counters and histograms' observations per second): the conditional test
  of two Poisson rates: given ``c_A + c_B`` events over ``t_A`` and ``t_B`` seconds,
  ``c_B`` is binomial with ``t_B / (t_A + t_B)`` if the rates are equal.
* With **three or more baseline runs**, B's figure must also lie outside the range of
  the baseline runs' own figures: a change smaller than the run-to-run spread is noise,
  however many observations each run has.
* A relative change under :data:`NOISE_FLOOR` is never significant (the sketches'
  relative error is 0.54 %).

The significance level is :data:`ALPHA`. Gauges are compared by mean and max
without a test, so they are never significant with fewer than three baseline runs.
``--fail-on p95>+10%`` (:func:`parse_fail_on`) turns significant changes beyond a
threshold into a failed comparison (``holter compare`` exits 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from holter import _clock
from holter._version import __version__
from holter.core.sketch import Sketch, value_of
from holter.errors import QueryError
from holter.model import RunInfo
from holter.reports.model import clean
from holter.store import query as q
from holter.store.sqlite import Store

ALPHA = 0.01
"""Significance level of every test."""
NOISE_FLOOR = 0.02
"""Relative changes below this (2 %) are never significant."""
QUANTILE_STATS = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
SCHEMA_ID = "https://holter.invalid/schema/compare-1.json"
SCHEMA_VERSION = 1
_INTERNAL = ("holter.",)
_FAIL_ON = re.compile(
    r"^\s*(?P<stat>p50|p75|p90|p95|p99|rate|mean|max)(?:\((?P<name>[^()]+)\))?\s*"
    r"(?P<op>[<>])\s*(?P<value>[+-]?\d+(?:\.\d+)?)\s*%\s*$"
)
_BASELINE = re.compile(
    r"^\s*(?:last\s+)?(?P<n>\d+)(?:\s+runs?)?(?:\s+of(?:\s+app)?\s+(?P<app>\S+))?\s*$", re.I)


@dataclass(frozen=True, slots=True)
class FailOn:
    """A gate: ``stat`` changed beyond ``threshold`` (relative; > 0 up, < 0 down)."""

    text: str
    stat: str
    threshold: float
    name: str | None = None

    def hit(self, change: Change, row: CompareRow) -> bool:
        """Whether a significant change of this row crosses the gate."""
        if change.stat != self.stat or not change.significant or change.change is None:
            return False
        if self.name is not None and self.name not in (row.name, row.metric):
            return False
        if self.threshold >= 0:
            return change.change > self.threshold
        return change.change < self.threshold


def parse_fail_on(texts: Iterable[str]) -> list[FailOn]:
    """``["p95>+10%", "rate(http.server.requests)<-20%"]`` → gates; QueryError if malformed."""
    out = []
    for text in texts:
        m = _FAIL_ON.match(text)
        if not m:
            raise QueryError(
                f"bad --fail-on {text!r}: use STAT>+N% or STAT<-N% (STAT: p50, p75, p90, p95, "
                "p99, rate, mean, max), optionally STAT(NAME) for one metric or operation"
            )
        value = float(m["value"]) / 100
        if (m["op"] == ">") != (value >= 0) and value != 0:
            raise QueryError(f"bad --fail-on {text!r}: '>' takes a positive change (+10%), "
                             "'<' a negative one (-10%)")
        out.append(FailOn(text=text.strip(), stat=m["stat"], threshold=value, name=m["name"]))
    return out


@dataclass(slots=True)
class Change:
    """One figure of one row on both sides, its relative change and its test."""

    stat: str
    a: float | None
    b: float | None
    change: float | None
    p_value: float | None
    significant: bool
    direction: str


@dataclass(slots=True)
class CompareRow:
    """One series (or operation) present on both sides."""

    kind: str
    name: str
    metric: str
    tags: dict[str, str]
    unit: str
    series_kind: str
    count_a: float
    count_b: float
    changes: list[Change] = field(default_factory=list)


@dataclass(slots=True)
class Side:
    """The runs of one side."""

    label: str
    runs: list[int]
    recorded_s: float


@dataclass(slots=True)
class Comparison:
    """Everything ``holter compare`` says."""

    title: str
    generated_ns: int
    holter_version: str
    store: str
    a: Side
    b: Side
    alpha: float
    rows: list[CompareRow]
    only_a: list[str]
    only_b: list[str]
    fail_on: list[str]
    regressions: list[str]
    notes: list[str]

    @property
    def failed(self) -> bool:
        """Whether a ``--fail-on`` gate was crossed."""
        return bool(self.regressions)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (schema :data:`SCHEMA_ID`)."""
        data = {"schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION}
        data.update(asdict(self))
        data["failed"] = self.failed
        return clean(data)


# -- statistics ----------------------------------------------------------------------------


def _norm_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def exceedance_test(a: Sketch, b: Sketch, p: float) -> tuple[float | None, float | None,
                                                             float | None]:
    """``(A's p-quantile, B's p-quantile, p-value)`` of the exceedance test (module docstring)."""
    n_a, n_b = a.count, b.count
    if n_a < 2 or n_b < 2:
        return None, None, None
    qa = a.quantile(p)
    qb = b.quantile(p)
    if qa is None or qb is None:
        return qa, qb, None
    above = 0.0
    for value, count in _walk(b):
        if value > qa * (1 + 1e-12) if qa >= 0 else value > qa * (1 - 1e-12):
            above += count
        elif math.isclose(value, qa, rel_tol=1e-12, abs_tol=0.0):
            above += count / 2
    expected = n_b * (1 - p)
    var = n_b * p * (1 - p) * (1 + n_b / n_a)
    if var <= 0:
        return qa, qb, None
    return qa, qb, _norm_p((above - expected) / math.sqrt(var))


def _walk(s: Sketch) -> Iterable[tuple[float, int]]:
    for k in sorted(s.neg, reverse=True):
        yield -value_of(k), s.neg[k]
    if s.zero:
        yield 0.0, s.zero
    for k in sorted(s.pos):
        yield value_of(k), s.pos[k]


def rate_test(count_a: float, seconds_a: float, count_b: float, seconds_b: float) -> float | None:
    """p-value of "equal Poisson rates" given counts and exposures (normal approximation)."""
    n = count_a + count_b
    if n <= 0 or seconds_a <= 0 or seconds_b <= 0:
        return None
    share = seconds_b / (seconds_a + seconds_b)
    var = n * share * (1 - share)
    if var <= 0:
        return None
    return _norm_p((count_b - n * share) / math.sqrt(var))


def _relative(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if a == 0:
        return 0.0 if b == 0 else math.inf if b > 0 else -math.inf
    return (b - a) / abs(a)


def _change(stat: str, a: float | None, b: float | None, p_value: float | None,
            spread: Sequence[float] | None) -> Change:
    rel = _relative(a, b)
    significant = (
        rel is not None and p_value is not None and p_value < ALPHA and abs(rel) >= NOISE_FLOOR
    )
    if significant and spread is not None and len(spread) >= 3 and b is not None:
        significant = b > max(spread) if rel and rel > 0 else b < min(spread)
    direction = "same"
    if significant and rel is not None:
        direction = "up" if rel > 0 else "down"
    return Change(stat=stat, a=a, b=b, change=rel, p_value=p_value, significant=significant,
                  direction=direction)


# -- reading both sides --------------------------------------------------------------------


@dataclass(slots=True)
class _Acc:
    name: str
    kind: str
    unit: str
    tags: dict[str, str]
    count: float = 0.0
    seconds: float = 0.0
    sketch: Sketch | None = None
    means: list[float] = field(default_factory=list)
    maxes: list[float] = field(default_factory=list)
    per_run: dict[str, list[float]] = field(default_factory=dict)


def _side(store: Store, runs: Sequence[RunInfo]) -> dict[tuple[str, str, str, str], _Acc]:
    out: dict[tuple[str, str, str, str], _Acc] = {}
    for run in runs:
        end = max(run.last_flush_ns, run.ended_ns or 0, run.started_ns + 1)
        for w in q.series_windows(store, run.started_ns - 1, end, run=run.id, sketches=True):
            s = w.series
            if s.name.startswith(_INTERNAL):
                continue
            key = (s.name, s.kind, s.unit, repr(sorted(s.tags.items())))
            acc = out.get(key)
            if acc is None:
                acc = out[key] = _Acc(s.name, s.kind, s.unit, dict(s.tags))
            st = w.stats
            acc.count += st.count or 0
            acc.seconds += st.covered_s
            if w.sketch is not None:
                if acc.sketch is None:
                    acc.sketch = Sketch()
                acc.sketch.merge(w.sketch)
            if st.mean is not None:
                acc.means.append(st.mean)
            if st.max is not None:
                acc.maxes.append(st.max)
            figures = {"rate": st.rate, "mean": st.mean, "max": st.max,
                       **{name: getattr(st, name) for name, _ in QUANTILE_STATS}}
            for stat, value in figures.items():
                if value is not None:
                    acc.per_run.setdefault(stat, []).append(value)
    return out


def _label(acc: _Acc) -> str:
    if acc.name == "span.duration" and "name" in acc.tags:
        return acc.tags["name"]
    tags = " ".join(f"{k}={v}" for k, v in sorted(acc.tags.items()))
    return f"{acc.name} {tags}".strip()


def _row(a: _Acc, b: _Acc, baseline_runs: int) -> CompareRow:
    operation = a.name == "span.duration" and "name" in a.tags
    row = CompareRow(kind="operation" if operation else "series", name=_label(a),
                     metric=a.name, tags=dict(a.tags), unit=a.unit, series_kind=a.kind,
                     count_a=a.count, count_b=b.count)

    def spread(stat: str) -> list[float] | None:
        return a.per_run.get(stat) if baseline_runs >= 3 else None

    if a.kind == "histogram" and a.sketch is not None and b.sketch is not None:
        for stat, p in QUANTILE_STATS:
            qa, qb, p_value = exceedance_test(a.sketch, b.sketch, p)
            row.changes.append(_change(stat, qa, qb, p_value, spread(stat)))
    if a.kind in ("counter", "histogram"):
        rate_a = a.count / a.seconds if a.seconds > 0 else None
        rate_b = b.count / b.seconds if b.seconds > 0 else None
        row.changes.append(_change("rate", rate_a, rate_b,
                                   rate_test(a.count, a.seconds, b.count, b.seconds),
                                   spread("rate")))
    if a.kind == "gauge":
        mean_a = sum(a.means) / len(a.means) if a.means else None
        mean_b = sum(b.means) / len(b.means) if b.means else None
        # no test on two gauge runs; with a baseline set, "outside the baseline's range"
        row.changes.append(_change("mean", mean_a, mean_b, 0.0 if baseline_runs >= 3 else None,
                                   spread("mean")))
        row.changes.append(_change("max", max(a.maxes, default=None), max(b.maxes, default=None),
                                   0.0 if baseline_runs >= 3 else None, spread("max")))
    return row


def resolve_sides(
    store: Store,
    run_a: int | None = None,
    run_b: int | None = None,
    *,
    baseline: str | int | None = None,
    app: str | None = None,
) -> tuple[list[RunInfo], list[RunInfo], list[str]]:
    """The runs of side A and side B, and notes.

    ``run_a`` and ``run_b``: compare two runs. ``baseline`` (``10``, ``"last 10"``, ``"last
    10 runs of app X"``): the N runs of the app before B (``run_b``, or ``run_a`` when
    only one run is given, or else the app's latest run). Raises QueryError for unknown
    runs or a malformed baseline.
    """
    notes: list[str] = []
    if baseline is None:
        if run_a is None or run_b is None:
            raise QueryError("give two runs (holter compare RUN_A RUN_B) or --baseline N")
        return [q.get_run(store, run_a)], [q.get_run(store, run_b)], notes
    if run_a is not None and run_b is not None:
        raise QueryError("with --baseline give at most one run: the one to compare")
    m = _BASELINE.match(str(baseline))
    if not m or int(m["n"]) < 1:
        raise QueryError(f"bad --baseline {baseline!r}: use N, 'last N' or "
                         "'last N runs of app NAME'")
    n = int(m["n"])
    app = m["app"] or app
    target_id = run_b if run_b is not None else run_a
    if target_id is not None:
        target = q.get_run(store, target_id)
        app = app or target.app
    else:
        latest = q.runs(store, app=app, limit=1)
        if not latest:
            raise QueryError(f"no runs of app {app!r} in the store" if app
                             else "no runs in the store")
        target = latest[0]
        app = app or target.app
    before = [r for r in q.runs(store, app=app)
              if r.id != target.id and (r.started_ns, r.id) < (target.started_ns, target.id)]
    chosen = before[:n]
    if not chosen:
        raise QueryError(f"no runs of app {app!r} before run {target.id} to compare with")
    if len(chosen) < n:
        notes.append(f"only {len(chosen)} runs of app {app!r} before run {target.id} "
                     f"(asked for {n})")
    return sorted(chosen, key=lambda r: r.started_ns), [target], notes


def compare(
    store: Store,
    run_a: int | None = None,
    run_b: int | None = None,
    *,
    baseline: str | int | None = None,
    app: str | None = None,
    fail_on: Sequence[str] = (),
    title: str | None = None,
) -> Comparison:
    """Compare two runs, or a baseline set and a run (:func:`resolve_sides`)."""
    gates = parse_fail_on(fail_on)
    side_a, side_b, notes = resolve_sides(store, run_a, run_b, baseline=baseline, app=app)
    acc_a = _side(store, side_a)
    acc_b = _side(store, side_b)
    rows = [_row(acc_a[k], acc_b[k], len(side_a)) for k in sorted(acc_a) if k in acc_b]
    rows.sort(key=lambda r: (r.kind != "operation", r.metric, r.name))
    regressions = []
    for row in rows:
        for change in row.changes:
            for gate in gates:
                if gate.hit(change, row):
                    regressions.append(
                        f"{row.name}: {change.stat} {_fmt_change(change.change)} "
                        f"(p = {change.p_value:.2g}) crosses {gate.text}"
                    )
    if len(side_a) < 3:
        notes.append("fewer than 3 baseline runs: run-to-run noise cannot be measured, so "
                     "changes are tested within the runs only (gauges are not tested)")
    label_a = (f"run {side_a[0].id}" if len(side_a) == 1
               else f"{len(side_a)} runs ({side_a[0].id}…{side_a[-1].id})")
    return Comparison(
        title=title or f"holter compare: {label_a} → run {side_b[0].id}",
        generated_ns=_clock.time_ns(), holter_version=__version__, store=str(store.path),
        a=Side(label_a, [r.id for r in side_a], sum(_seconds(r) for r in side_a)),
        b=Side(f"run {side_b[0].id}", [r.id for r in side_b], sum(_seconds(r) for r in side_b)),
        alpha=ALPHA, rows=rows,
        only_a=sorted(_label(acc_a[k]) for k in acc_a if k not in acc_b),
        only_b=sorted(_label(acc_b[k]) for k in acc_b if k not in acc_a),
        fail_on=[g.text for g in gates], regressions=regressions, notes=notes,
    )


def _seconds(run: RunInfo) -> float:
    return max(max(run.last_flush_ns, run.ended_ns or 0) - run.started_ns, 0) / 1e9


def _fmt_change(change: float | None) -> str:
    if change is None:
        return "-"
    if math.isinf(change):
        return "+∞" if change > 0 else "-∞"
    return f"{change * 100:+.1f}%"


# -- Markdown (the HTML has its own template) ----------------------------------------------


def markdown_lines(c: Comparison, *, escape: Any, code: Any, table: Any) -> list[str]:
    """The Markdown of a comparison (called by the Markdown renderer)."""
    from holter.reports import fmt

    out = [f"# {escape(c.title)}", "",
           f"**A:** {escape(c.a.label)} ({fmt.seconds(c.a.recorded_s)} recorded) · "
           f"**B:** {escape(c.b.label)} ({fmt.seconds(c.b.recorded_s)} recorded)  ",
           f"**Store:** {escape(c.store)} · significance level {c.alpha:g}", ""]
    for note in c.notes:
        out += [f"> **Note:** {escape(note)}", ""]
    if c.fail_on:
        verdict = "**FAILED**" if c.failed else "passed"
        out += [f"Gates {', '.join(code(g) for g in c.fail_on)}: {verdict}", ""]
        out += [f"- {escape(r)}" for r in c.regressions]
        out.append("")
    significant = [(row, ch) for row in c.rows for ch in row.changes if ch.significant]
    out += ["## Significant changes", ""]
    rows = [[code(row.name), escape(ch.stat), fmt.num(ch.a, row.unit if ch.stat != "rate"
                                                      else ""),
             fmt.num(ch.b, row.unit if ch.stat != "rate" else ""), _fmt_change(ch.change),
             f"{ch.p_value:.2g}" if ch.p_value is not None else "-"]
            for row, ch in significant]
    out += [table(["series / operation", "figure", "A", "B", "change", "p"], rows,
                  right=(2, 3, 4, 5)), ""]
    out += ["## Everything compared", ""]
    rows = []
    for row in c.rows:
        cells = {ch.stat: ch for ch in row.changes}
        rows.append([code(row.name), row.kind, fmt.num(row.count_a), fmt.num(row.count_b),
                     *[_cell(cells.get(stat), row.unit) for stat in ("p50", "p95", "p99")],
                     _cell(cells.get("rate"), ""), _cell(cells.get("mean"), row.unit)])
    out += [table(["series / operation", "kind", "count A", "count B", "p50", "p95", "p99",
                   "rate/s", "mean"], rows, right=tuple(range(2, 9))), ""]
    if c.only_a or c.only_b:
        out += ["## Not on both sides", ""]
        if c.only_a:
            out.append(f"- only in A: {', '.join(code(n) for n in c.only_a[:50])}")
        if c.only_b:
            out.append(f"- only in B: {', '.join(code(n) for n in c.only_b[:50])}")
        out.append("")
    return out


def _cell(change: Change | None, unit: str) -> str:
    if change is None or change.b is None:
        return "-"
    from holter.reports import fmt

    mark = {"up": " ▲", "down": " ▼"}.get(change.direction, "")
    return f"{fmt.num(change.b, unit)} ({_fmt_change(change.change)}){mark}"


__all__ = ["ALPHA", "NOISE_FLOOR", "Change", "CompareRow", "Comparison", "FailOn", "Side",
           "compare", "exceedance_test", "markdown_lines", "parse_fail_on", "rate_test",
           "resolve_sides"]
