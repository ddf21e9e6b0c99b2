"""Patterns over stored anomalies: recurring, trending and correlated, ranked by evidence.

Pure functions over lists of :class:`holter.store.anomalies.Anomaly`. Every pattern
comes with a p-value under a stated null hypothesis, corrected for the number of
candidates tried, and patterns are ranked by it (smallest first):

* **recurring** — a series' anomalies line up on a period (from the gaps between them,
  or an hour, a day, a week): more of them fall within ±2 % of the period (at least
  30 s) of one phase than uniformly random times would, in at least 3 different cycles.
  Null: onsets uniform in time (binomial tail, corrected for the phases and periods
  tried). Reports the period, the phase and the next expected occurrence.
* **trending** — anomalies of a series become more (or less) frequent: the Laplace
  test of a Poisson process with constant rate over the window; or larger (or
  smaller): the Mann-Kendall test on their deviations from the expected value, with
  Sen's slope. Both are rank or count tests, not a raw regression coefficient.
* **correlated** — anomalies of two different series that happen together (within
  ``within_s`` of each other) more often than independent series would: Poisson tail
  of the number of co-occurrences given each series' anomaly count and durations,
  corrected for the number of pairs. Reports the median lag (``b`` after ``a``).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from holter.store.anomalies import Anomaly

MAX_P = 0.01
"""Patterns with a corrected p-value above this are not reported."""
MAX_PER_SERIES = 500
"""Newest anomalies of a series that the tests look at."""
MAX_SERIES = 200
"""Series (with the most anomalies) compared pairwise for correlation."""
_NS = 1_000_000_000
_NATURAL_PERIODS = (3600.0, 86_400.0, 7 * 86_400.0)


@dataclass(frozen=True, slots=True)
class Pattern:
    """One pattern: its type, the series involved, the evidence and a one-line description.

    ``series`` are labels ``metric{tag=value}:stat``; ``p_value`` is corrected for the
    candidates tried; ``details`` holds the type's numbers (period, slope, lag ...).
    """

    type: str
    series: tuple[str, ...]
    description: str
    p_value: float
    count: int
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "type": self.type, "series": list(self.series), "description": self.description,
            "p_value": self.p_value, "count": self.count, "details": self.details,
        }


def label(a: Anomaly) -> str:
    """``metric{tag=value,...}:stat`` of an anomaly's series."""
    tags = ",".join(f"{k}={v}" for k, v in sorted(a.tags.items()))
    return f"{a.metric}{{{tags}}}:{a.stat}" if tags else f"{a.metric}:{a.stat}"


def find_patterns(
    anomalies: Iterable[Anomaly],
    start_ns: int,
    end_ns: int,
    *,
    within_s: float = 60.0,
    max_p: float = MAX_P,
) -> list[Pattern]:
    """Recurring, trending and correlated patterns in the window, strongest first."""
    groups = group_by_series(anomalies)
    found: list[Pattern] = []
    for items in groups.values():
        found.extend(recurring(items, max_p=max_p))
        found.extend(trending(items, start_ns, end_ns, max_p=max_p))
    found.extend(correlated(groups, start_ns, end_ns, within_s=within_s, max_p=max_p))
    found.sort(key=lambda p: (p.p_value, -p.count, p.type, p.series))
    # the statistics of one series (p50, p95, p99) tell one story: keep its strongest
    kept: list[Pattern] = []
    seen: set[tuple[Any, ...]] = set()
    for pattern in found:
        ident = (pattern.type, pattern.details.get("test"),
                 tuple(sorted(pattern.details.get("series_ids", ()))))
        if ident in seen:
            continue
        seen.add(ident)
        kept.append(pattern)
    return kept


def group_by_series(anomalies: Iterable[Anomaly]) -> dict[tuple[int, str], list[Anomaly]]:
    """Anomalies per (series id, stat), oldest first, at most :data:`MAX_PER_SERIES` each."""
    groups: dict[tuple[int, str], list[Anomaly]] = {}
    for a in anomalies:
        groups.setdefault((a.series_id, a.stat), []).append(a)
    for key, items in groups.items():
        items.sort(key=lambda a: (a.time_ns, a.id))
        groups[key] = items[-MAX_PER_SERIES:]
    return groups


# -- recurring -----------------------------------------------------------------------------


def recurring(items: Sequence[Anomaly], *, max_p: float = MAX_P) -> list[Pattern]:
    """A period on which one series' anomalies line up (see the module documentation)."""
    n = len(items)
    if n < 3:
        return []
    times = [a.time_ns / _NS for a in items]
    candidates = _candidate_periods(times)
    found: list[tuple[float, float, int, float, list[int]]] = []
    tries = max(len(candidates), 1) * n
    for candidate in candidates:
        period = candidate
        tol = max(0.02 * period, 30.0)
        if 2 * tol >= 0.5 * period:
            continue
        k, phase, members = _best_phase(times, period, tol)
        refined = _refine(times, members, period)
        if refined is not None and abs(refined - period) < 0.05 * period:
            k2, phase2, members2 = _best_phase(times, refined, tol)
            if k2 > k:
                period, k, phase, members = refined, k2, phase2, members2
        cycles = len({int(times[i] // period) for i in members})
        if k < 3 or cycles < 3:
            continue
        p = min(1.0, _binom_tail(k, n, 2 * tol / period) * tries)
        if p <= max_p:
            found.append((p, period, k, phase, members))
    if not found:
        return []
    # a divisor of the true period (1 h for events every 6 h) aligns the same anomalies
    # just as well, a multiple aligns fewer: the longest period among the best explains them
    best_p = min(f[0] for f in found)
    p, period, k, phase, members = max((f for f in found if f[0] <= best_p * 100),
                                       key=lambda f: (f[1], -f[0]))
    last = max(times[i] for i in members)
    details = {
        "series_ids": [items[0].series_id],
        "period_s": period,
        "phase_s": phase,
        "aligned": k,
        "anomalies": n,
        "cycles": len({int(times[i] // period) for i in members}),
        "last_ns": int(last * _NS),
        "next_expected_ns": int((last + period) * _NS),
    }
    name = label(items[0])
    return [Pattern(
        "recurring", (name,),
        f"{name}: {k} of {n} anomalies recur every {_fmt_period(period)}"
        f"{_fmt_phase(period, phase)} (p={p:.2g})",
        p, k, details,
    )]


def _candidate_periods(times: Sequence[float]) -> list[float]:
    gaps = sorted(b - a for a, b in itertools.pairwise(times) if b - a >= 60.0)
    out: list[float] = []
    for period in [*_NATURAL_PERIODS, *gaps]:
        if all(abs(period - c) > 0.05 * c for c in out):
            out.append(period)
        if len(out) >= 64:
            break
    return out


def _refine(times: Sequence[float], members: Sequence[int], period: float) -> float | None:
    """The period that best fits the aligned anomalies (least squares on cycle numbers).

    A period taken from one gap between two anomalies is off by their jitter; over many
    cycles that error adds up and breaks the alignment.
    """
    if len(members) < 3:
        return None
    ts = sorted(times[i] for i in members)
    cycles = [round((t - ts[0]) / period) for t in ts]
    n = len(ts)
    mc = sum(cycles) / n
    mt = sum(ts) / n
    var = sum((c - mc) ** 2 for c in cycles)
    if var <= 0:
        return None
    return sum((c - mc) * (t - mt) for c, t in zip(cycles, ts, strict=True)) / var


def _best_phase(
    times: Sequence[float], period: float, tol: float
) -> tuple[int, float, list[int]]:
    """The most anomalies within ±tol of one phase: (count, phase, their indices)."""
    phases = sorted((t % period, i) for i, t in enumerate(times))
    ext = phases + [(p + period, i) for p, i in phases]
    best_k, best_lo, best_hi = 0, 0, 0
    hi = 0
    for lo in range(len(phases)):
        hi = max(hi, lo)
        while hi + 1 < len(ext) and ext[hi + 1][0] - ext[lo][0] <= 2 * tol:
            hi += 1
        if hi - lo + 1 > best_k:
            best_k, best_lo, best_hi = hi - lo + 1, lo, hi
    members = [ext[j][1] for j in range(best_lo, best_hi + 1)]
    phase = (0.5 * (ext[best_lo][0] + ext[best_hi][0])) % period
    return best_k, phase, members


def _binom_tail(k: int, n: int, q: float) -> float:
    """P(X >= k) for X ~ Binomial(n, q)."""
    if q >= 1.0:
        return 1.0
    if k <= 0:
        return 1.0
    lq, lr = math.log(q), math.log1p(-q)
    total = 0.0
    for j in range(k, n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
                          + j * lq + (n - j) * lr)
    return min(total, 1.0)


# -- trending ------------------------------------------------------------------------------


def trending(
    items: Sequence[Anomaly], start_ns: int, end_ns: int, *, max_p: float = MAX_P
) -> list[Pattern]:
    """More or fewer, larger or smaller anomalies of one series over the window."""
    out: list[Pattern] = []
    n = len(items)
    name = label(items[0]) if items else ""
    span = (end_ns - start_ns) / _NS
    if n >= 5 and span > 0:
        # Laplace test: under a constant rate the onsets are uniform on the window
        mean = sum((a.time_ns - start_ns) / _NS for a in items) / n
        z = (mean - span / 2) / (span * math.sqrt(1.0 / (12 * n)))
        p = min(1.0, 2 * _norm_sf(abs(z)) * 2)  # two tests of this series
        if p <= max_p:
            half = start_ns + (end_ns - start_ns) // 2
            first = sum(1 for a in items if a.time_ns <= half)
            word = "more" if z > 0 else "less"
            out.append(Pattern(
                "trending", (name,),
                f"{name}: anomalies becoming {word} frequent ({first} in the first half of "
                f"the window, {n - first} in the second; Laplace z={z:.2f}, p={p:.2g})",
                p, n, {"test": "laplace", "series_ids": [items[0].series_id], "z": z,
                       "first_half": first, "second_half": n - first,
                       "direction": "increasing" if z > 0 else "decreasing"},
            ))
    sized = [a for a in items if a.expected is not None and math.isfinite(a.value)]
    if len(sized) >= 5:
        xs = [(a.time_ns / _NS, abs(a.value - (a.expected or 0.0))) for a in sized]
        z, slope = _mann_kendall(xs)
        p = min(1.0, 2 * _norm_sf(abs(z)) * 2)
        if p <= max_p and slope != 0:
            word = "larger" if z > 0 else "smaller"
            unit = sized[0].unit
            out.append(Pattern(
                "trending", (name,),
                f"{name}: anomalies growing {word} (Sen's slope {slope * 86400:+.3g}"
                f"{' ' + unit if unit else ''} a day in their deviation; Mann-Kendall "
                f"z={z:.2f}, p={p:.2g})",
                p, len(sized), {"test": "mann_kendall", "series_ids": [items[0].series_id],
                                "z": z, "slope_per_day": slope * 86400,
                                "direction": "increasing" if z > 0 else "decreasing"},
            ))
    return out


def _mann_kendall(xs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(z, Sen's slope per second) of the values over time, ties accounted for."""
    n = len(xs)
    s = 0
    slopes = []
    for i in range(n - 1):
        ti, vi = xs[i]
        for j in range(i + 1, n):
            tj, vj = xs[j]
            d = vj - vi
            s += (d > 0) - (d < 0)
            if tj > ti:
                slopes.append(d / (tj - ti))
    counts: dict[float, int] = {}
    for _, v in xs:
        counts[v] = counts.get(v, 0) + 1
    ties = sum(c * (c - 1) * (2 * c + 5) for c in counts.values() if c > 1)
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    if var <= 0:
        return 0.0, 0.0
    z = (s - (1 if s > 0 else -1 if s < 0 else 0)) / math.sqrt(var)
    slopes.sort()
    slope = slopes[len(slopes) // 2] if slopes else 0.0
    return z, slope


def _norm_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# -- correlated ----------------------------------------------------------------------------


def correlated(
    groups: dict[tuple[int, str], list[Anomaly]],
    start_ns: int,
    end_ns: int,
    *,
    within_s: float = 60.0,
    max_p: float = MAX_P,
) -> list[Pattern]:
    """Pairs of series whose anomalies happen together more often than chance."""
    span = (end_ns - start_ns) / _NS
    if span <= 0:
        return []
    busy = sorted((k for k, v in groups.items() if len(v) >= 2),
                  key=lambda k: (-len(groups[k]), k))[:MAX_SERIES]
    pairs = [(a, b) for i, a in enumerate(busy) for b in busy[i + 1:] if a[0] != b[0]]
    if not pairs:
        return []
    starts = {k: [a.time_ns / _NS for a in groups[k]] for k in busy}
    ends = {k: [a.end_ns / _NS for a in groups[k]] for k in busy}
    durations = {k: sum(e - s for s, e in zip(starts[k], ends[k], strict=True)) / len(starts[k])
                 for k in busy}
    out = []
    for ka, kb in pairs:
        a_s, a_e, b_s, b_e = starts[ka], ends[ka], starts[kb], ends[kb]
        k = 0
        lags = []
        for s, e in zip(a_s, a_e, strict=True):
            j = bisect.bisect_left(b_s, s - within_s - durations[kb] * 4 - 1.0)
            best_lag = None
            while j < len(b_s) and b_s[j] <= e + within_s:
                if b_e[j] >= s - within_s:
                    lag = b_s[j] - s
                    if best_lag is None or abs(lag) < abs(best_lag):
                        best_lag = lag
                j += 1
            if best_lag is not None:
                k += 1
                lags.append(best_lag)
        if k < 2:
            continue
        reach = 2 * within_s + durations[ka] + durations[kb]
        lam = len(a_s) * min(1.0, len(b_s) * reach / span)
        p = min(1.0, _poisson_tail(k, lam) * len(pairs))
        if p > max_p:
            continue
        lags.sort()
        lag = lags[len(lags) // 2]
        na, nb = label(groups[ka][0]), label(groups[kb][0])
        out.append(Pattern(
            "correlated", (na, nb),
            f"{na} and {nb}: {k} of {len(a_s)} anomalies together "
            f"(expected {lam:.2g} by chance; {nb} {_fmt_lag(lag)}; p={p:.2g})",
            p, k, {"series_ids": [ka[0], kb[0]], "together": k, "expected": lam,
                   "median_lag_s": lag, "anomalies": [len(a_s), len(b_s)],
                   "within_s": within_s},
        ))
    return out


def _poisson_tail(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam)."""
    if lam <= 0:
        return 0.0 if k > 0 else 1.0
    term = math.exp(-lam)
    below = 0.0
    for j in range(k):
        below += term
        term *= lam / (j + 1)
    return max(0.0, 1.0 - below) if below < 0.999 else _poisson_upper(k, lam)


def _poisson_upper(k: int, lam: float) -> float:
    """The same tail summed upwards (precise when it is tiny)."""
    term = math.exp(-lam + k * math.log(lam) - math.lgamma(k + 1))
    total = 0.0
    j = k
    while term > 1e-300 and j < k + 10_000:
        total += term
        j += 1
        term *= lam / j
        if term < total * 1e-16:
            break
    return min(total, 1.0)


# -- formatting ----------------------------------------------------------------------------


def _fmt_period(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.2g} {unit}"
    return f"{seconds:.2g} s"


def _fmt_phase(period: float, phase: float) -> str:
    if abs(period - 86400.0) <= 0.05 * 86400.0:
        h, rem = divmod(int(phase), 3600)
        return f" at about {h:02d}:{rem // 60:02d} UTC"
    if abs(period - 3600.0) <= 0.05 * 3600.0:
        return f" at about minute {int(phase // 60):02d}"
    return ""


def _fmt_lag(lag: float) -> str:
    if abs(lag) < 1.0:
        return "at the same time"
    return f"{abs(lag):.3g} s {'after' if lag > 0 else 'before'}"


__all__ = ["MAX_P", "Pattern", "correlated", "find_patterns", "group_by_series", "label",
           "recurring", "trending"]
