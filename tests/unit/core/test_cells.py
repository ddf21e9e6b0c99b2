"""Value cells (the hot path) and the two fold paths (pure Python and numpy).

The cells are built directly with an ``on_bad`` hook that records what it is given
(the hook is the cells' documented constructor argument).
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import threading
from array import array
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holter.core import _cells
from holter.core._cells import (
    BUFFER_CAP,
    CounterCell,
    GaugeCell,
    HistogramCell,
    HistogramStats,
)
from holter.core.sketch import RELATIVE_ACCURACY, Sketch

NO_TAGS: tuple[tuple[str, str], ...] = ()


class Bad:
    """An ``on_bad`` hook that remembers every call."""

    def __init__(self, *, raises: bool = False) -> None:
        self.calls: list[tuple[object, str, int]] = []
        self.raises = raises

    def __call__(self, value: object, reason: str, count: int = 1) -> None:
        self.calls.append((value, reason, count))
        if self.raises:
            raise ValueError(reason)

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, reason, count in self.calls:
            out[reason] = out.get(reason, 0) + count
        return out


# -- counter -----------------------------------------------------------------------------


def test_counter_inc_by_one() -> None:
    cell = CounterCell(NO_TAGS, Bad())
    for _ in range(1000):
        cell.inc()
    assert cell.collect() == 1000


def test_counter_collect_returns_deltas_and_none_when_idle() -> None:
    cell = CounterCell(NO_TAGS, Bad())
    assert cell.collect() is None
    cell.inc()
    cell.inc(4)
    assert cell.collect() == 5
    assert cell.collect() is None
    cell.inc(2.5)
    assert cell.collect() == 2.5
    cell.inc()
    assert cell.collect() == 1
    assert cell.collect() is None


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ([3, 7, 1], 11),
        ([0.25, 0.5, 1.0, 2.75], 4.5),
        ([True, True, 1], 3),
        ([Decimal("1"), Decimal("1"), 1.0], 3),
        ([1, 2**40], 2**40 + 1),
        ([np.float64(2.5), np.int64(3)], 5.5),
    ],
)
def test_counter_amounts(amounts, expected) -> None:
    bad = Bad()
    cell = CounterCell(NO_TAGS, bad)
    for a in amounts:
        cell.inc(a)
    assert cell.collect() == expected
    assert bad.calls == []


def test_counter_inc_zero_is_not_a_drop() -> None:
    bad = Bad()
    cell = CounterCell(NO_TAGS, bad)
    cell.inc(0)
    cell.inc(False)
    assert cell.collect() == 0
    assert bad.calls == []


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        ([Decimal("2.5"), 0.5], 3.0),
        ([Decimal("2.5")], 2.5),
        ([Fraction(5, 2)], 2.5),
    ],
    ids=["decimal+float", "decimal", "fraction"],
)
def test_counter_decimal_and_fraction_amounts_collect_as_floats(amounts, expected) -> None:
    cell = CounterCell(NO_TAGS, Bad())
    for a in amounts:
        cell.inc(a)
    delta = cell.collect()
    assert delta == expected
    assert type(delta) is float  # collect() is annotated float | None; the store needs one


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "not_finite"),
        (math.inf, "not_finite"),
        (-1, "negative"),
        (-0.5, "negative"),
        ("3", "not_a_number"),
        (None, "not_a_number"),
        (1j, "not_a_number"),
        (b"1", "not_a_number"),
    ],
)
def test_counter_bad_amounts_go_to_on_bad(value, reason) -> None:
    bad = Bad()
    cell = CounterCell(NO_TAGS, bad)
    cell.inc(value)
    assert len(bad.calls) == 1
    got_value, got_reason, count = bad.calls[0]
    assert got_reason == reason
    assert count == 1
    assert got_value is value or (value != value and got_value != got_value)
    assert cell.collect() is None  # nothing was recorded


def test_counter_bad_amount_raises_through_a_strict_hook() -> None:
    cell = CounterCell(NO_TAGS, Bad(raises=True))
    with pytest.raises(ValueError, match="negative"):
        cell.inc(-3)
    cell.inc(2)
    assert cell.collect() == 2


def test_counter_buffer_fold_keeps_totals_exact() -> None:
    cell = CounterCell(NO_TAGS, Bad())
    n = 2 * BUFFER_CAP + 17
    for i in range(n):
        cell.inc(2)
        cell.inc()
        if i % 512 == 0:
            assert len(cell._buf) < BUFFER_CAP
    assert len(cell._buf) < BUFFER_CAP
    assert cell.collect() == 3 * n
    assert cell.collect() is None
    # a fold on the recording thread between two collects is reported once
    for _ in range(BUFFER_CAP):
        cell.inc(0.5)
    assert len(cell._buf) == 0  # the last append reached the cap and folded
    assert cell.collect() == BUFFER_CAP * 0.5
    assert cell.collect() is None


def test_counter_loses_nothing_across_threads_and_concurrent_collects() -> None:
    cell = CounterCell(NO_TAGS, Bad())
    threads_n, ones, twos = 4, 20_000, 3_000
    collected: list[float] = []
    stop = threading.Event()

    def record() -> None:
        for i in range(ones):
            cell.inc()
            if i < twos:
                cell.inc(2)

    def collect_loop() -> None:
        while not stop.is_set():
            delta = cell.collect()
            if delta is not None:
                collected.append(delta)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        collector = threading.Thread(target=collect_loop)
        collector.start()
        workers = [threading.Thread(target=record) for _ in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stop.set()
        collector.join()
    finally:
        sys.setswitchinterval(old)
    rest = cell.collect()
    total = sum(collected) + (rest or 0)
    assert total == threads_n * (ones + 2 * twos)


def test_counter_reset_after_fork_forgets_earlier_values() -> None:
    cell = CounterCell(NO_TAGS, Bad())
    for _ in range(5):
        cell.inc()
    cell.inc(2.5)
    for _ in range(BUFFER_CAP):  # also a folded (pending) amount
        cell.inc(3)
    cell.reset_after_fork()
    assert cell.collect() is None
    cell.inc()
    cell.inc(4)
    assert cell.collect() == 5


# -- gauge -------------------------------------------------------------------------------


def test_gauge_never_set_reports_nothing() -> None:
    cell = GaugeCell(NO_TAGS, Bad())
    assert cell.value is None
    assert cell.collect() is None
    assert cell.collect() is None


def test_gauge_set_inc_dec_and_interval_statistics() -> None:
    cell = GaugeCell(NO_TAGS, Bad())
    cell.set(10)
    cell.inc()
    cell.inc(4.5)
    cell.dec(20)
    cell.dec()
    # values taken: 10, 11, 15.5, -4.5, -5.5
    assert cell.value == -5.5
    last, lo, hi, total, sets = cell.collect()
    assert (last, lo, hi, sets) == (-5.5, -5.5, 15.5, 5)
    assert total == pytest.approx(10 + 11 + 15.5 - 4.5 - 5.5)


def test_gauge_interval_min_max_restart_from_the_last_value() -> None:
    cell = GaugeCell(NO_TAGS, Bad())
    cell.set(100)
    cell.set(3)
    assert cell.collect() == (3, 3, 100, 103, 2)
    # an idle interval still reports the gauge's state, with no sets
    assert cell.collect() == (3, 3, 3, 0.0, 0)
    cell.set(7)
    assert cell.collect() == (7, 3, 7, 7, 1)
    cell.set(1)
    cell.set(2)
    assert cell.collect() == (2, 1, 7, 3, 2)


def test_gauge_inc_before_any_set_starts_from_zero() -> None:
    cell = GaugeCell(NO_TAGS, Bad())
    cell.inc(2)
    cell.dec(5)
    assert cell.value == -3
    assert cell.collect() == (-3, -3, 2, -1, 2)


@pytest.mark.parametrize(
    ("op", "value", "reason"),
    [
        ("set", math.nan, "not_finite"),
        ("set", math.inf, "not_finite"),
        ("set", -math.inf, "not_finite"),
        ("set", "1", "not_a_number"),
        ("set", None, "not_a_number"),
        ("inc", math.nan, "not_finite"),
        ("inc", "1", "not_a_number"),
        ("dec", math.inf, "not_finite"),
        ("dec", "1", "not_a_number"),
    ],
)
def test_gauge_bad_values_go_to_on_bad(op, value, reason) -> None:
    bad = Bad()
    cell = GaugeCell(NO_TAGS, bad)
    cell.set(4)
    getattr(cell, op)(value)
    assert [r for _, r, _ in bad.calls] == [reason]
    assert cell.value == 4
    assert cell.collect() == (4, 4, 4, 4, 1)


def test_gauge_inc_accepts_decimal() -> None:
    bad = Bad()
    cell = GaugeCell(NO_TAGS, bad)
    cell.inc(Decimal("1.5"))
    cell.dec(Decimal("0.5"))
    assert cell.value == 1.0
    assert bad.calls == []


def test_gauge_set_of_an_int_too_large_for_a_float_is_dropped() -> None:
    bad = Bad()
    cell = GaugeCell(NO_TAGS, bad)
    cell.set(10**400)
    assert [r for _, r, _ in bad.calls] == ["not_finite"]
    assert cell.value is None


def test_gauge_reset_after_fork_keeps_the_value_and_drops_the_interval() -> None:
    cell = GaugeCell(NO_TAGS, Bad())
    cell.set(50)
    cell.set(8)
    cell.reset_after_fork()
    assert cell.value == 8
    assert cell.collect() == (8, 8, 8, 0.0, 0)
    cell.inc()
    assert cell.collect() == (9, 8, 9, 9, 1)


# -- histogram ---------------------------------------------------------------------------


def test_histogram_collect_statistics() -> None:
    cell = HistogramCell(NO_TAGS, Bad())
    values = [3.5, -1.0, 0.0, 12.25, 7.0, 7.0, 1e-3]
    for v in values:
        cell.observe(v)
    assert cell.pending() == len(values)
    stats = cell.collect()
    assert cell.pending() == 0
    assert stats.count == len(values)
    assert stats.total == pytest.approx(math.fsum(values))
    assert stats.min == min(values)
    assert stats.max == max(values)
    assert stats.m2 / stats.count == pytest.approx(statistics.pvariance(values))
    assert stats.sketch.count == len(values)
    assert cell.collect() is None


def test_histogram_empty_collects_none() -> None:
    cell = HistogramCell(NO_TAGS, Bad())
    assert cell.collect() is None


def test_histogram_buffer_stays_under_cap_and_totals_are_exact() -> None:
    cell = HistogramCell(NO_TAGS, Bad())
    n = 2 * BUFFER_CAP + 100
    values = [i * 0.5 for i in range(n)]  # sums are exact in binary floating point
    peak = 0
    for v in values:
        cell.observe(v)
        peak = max(peak, cell.pending())
    assert peak < BUFFER_CAP
    stats = cell.collect()
    assert stats.count == n
    assert stats.total == math.fsum(values)
    assert stats.min == 0.0
    assert stats.max == values[-1]
    assert stats.m2 / n == pytest.approx(statistics.pvariance(values), rel=1e-12)
    assert stats.sketch.count == n
    ordered = sorted(values)
    for q in (0.01, 0.5, 0.99):
        exact = ordered[math.floor(q * (n - 1))]
        got = stats.sketch.quantile(q)
        assert abs(got - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-9)


def test_histogram_non_strict_drops_non_finite_at_fold_with_a_count() -> None:
    bad = Bad()
    cell = HistogramCell(NO_TAGS, bad, strict=False)
    for v in (1.0, math.nan, math.inf, 2.0, -math.inf):
        cell.observe(v)
    assert bad.calls == []  # non-finite values are found off the hot path
    cell.observe("x")
    cell.observe(None)
    assert bad.reasons() == {"not_a_number": 2}
    stats = cell.collect()
    assert bad.reasons() == {"not_a_number": 2, "not_finite": 3}
    assert stats.count == 2
    assert stats.total == 3.0
    assert (stats.min, stats.max) == (1.0, 2.0)


def test_histogram_only_bad_values_collects_none() -> None:
    bad = Bad()
    cell = HistogramCell(NO_TAGS, bad, strict=False)
    cell.observe(math.nan)
    assert cell.collect() is None
    assert bad.reasons() == {"not_finite": 1}


def test_histogram_strict_checks_on_the_hot_path() -> None:
    bad = Bad(raises=True)
    cell = HistogramCell(NO_TAGS, bad, strict=True)
    for v, reason in ((math.nan, "not_finite"), (-math.inf, "not_finite"), ("x", "not_a_number")):
        with pytest.raises(ValueError, match=reason):
            cell.observe(v)
    cell.observe(4.0)
    stats = cell.collect()
    assert stats.count == 1
    assert stats.total == 4.0


def test_histogram_accepts_numeric_types() -> None:
    bad = Bad()
    cell = HistogramCell(NO_TAGS, bad)
    for v in (1, True, Decimal("2.5"), Fraction(1, 4), np.float32(0.5), np.int64(3)):
        cell.observe(v)
    stats = cell.collect()
    assert bad.calls == []
    assert stats.count == 6
    assert stats.total == pytest.approx(1 + 1 + 2.5 + 0.25 + 0.5 + 3)


def test_histogram_observe_many_records_all_and_respects_the_cap() -> None:
    bad = Bad()
    cell = HistogramCell(NO_TAGS, bad, strict=False)
    cell.observe(1.0)
    cell.observe_many([2.0, 3.0, math.nan])
    assert cell.pending() == 4
    big = [0.25] * (3 * BUFFER_CAP + 5)
    cell.observe_many(big)
    assert cell.pending() < BUFFER_CAP
    stats = cell.collect()
    assert stats.count == 3 + len(big)
    assert stats.total == 6.0 + 0.25 * len(big)
    assert (stats.min, stats.max) == (0.25, 3.0)
    assert bad.reasons() == {"not_finite": 1}


def test_histogram_reset_after_fork_forgets_earlier_values() -> None:
    cell = HistogramCell(NO_TAGS, Bad())
    for v in range(BUFFER_CAP + 10):  # some folded, some buffered
        cell.observe(float(v))
    cell.reset_after_fork()
    assert cell.pending() == 0
    assert cell.collect() is None
    cell.observe(42.0)
    stats = cell.collect()
    assert (stats.count, stats.total, stats.min, stats.max) == (1, 42.0, 42.0, 42.0)


# -- the two fold paths (habit 15: the fallback against the fast path) -------------------


def fold_both(values: list[float]) -> tuple[HistogramStats, int, HistogramStats, int]:
    chunk = array("d", values)
    py_stats = HistogramStats()
    py_bad = _cells._fold_python(py_stats, array("d", chunk))
    np_stats = HistogramStats()
    np_bad = _cells._fold_numpy(np, np_stats, array("d", chunk))
    return py_stats, py_bad, np_stats, np_bad


def assert_same_fold(values: list[float]) -> None:
    py_stats, py_bad, np_stats, np_bad = fold_both(values)
    finite = [v for v in values if math.isfinite(v)]
    assert py_bad == np_bad == len(values) - len(finite)
    assert py_stats.count == np_stats.count == len(finite)
    assert py_stats.sketch.pos == np_stats.sketch.pos
    assert py_stats.sketch.neg == np_stats.sketch.neg
    assert py_stats.sketch.zero == np_stats.sketch.zero
    assert py_stats.sketch == np_stats.sketch
    assert py_stats.sketch.count == len(finite)
    if not finite:
        assert py_stats.count == 0
        return
    assert py_stats.min == np_stats.min == min(finite)
    assert py_stats.max == np_stats.max == max(finite)
    scale = math.fsum(abs(v) for v in finite)
    assert math.isclose(py_stats.total, np_stats.total, rel_tol=1e-9, abs_tol=1e-12 * scale)
    squares = math.fsum(v * v for v in finite)
    assert math.isclose(py_stats.m2, np_stats.m2, rel_tol=1e-9, abs_tol=1e-9 * squares)


fold_values = st.one_of(
    st.floats(min_value=-1e150, max_value=1e150),  # includes zeros, -0.0 and subnormals
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0]),
    st.integers(-100, 100).map(float),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(fold_values, min_size=1, max_size=300))
def test_fold_python_and_numpy_agree(values: list[float]) -> None:
    assert_same_fold(values)


def test_fold_paths_agree_on_a_large_mixed_chunk() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            rng.lognormal(0, 3, 4000),
            -rng.lognormal(2, 1, 2000),
            rng.normal(0, 1e-3, 2000),
            np.zeros(500),
            np.full(37, np.nan),
            np.full(11, np.inf),
            np.full(5, -np.inf),
        ]
    )
    rng.shuffle(values)
    assert_same_fold(values.tolist())


def test_fold_paths_agree_on_all_positive_chunks() -> None:
    # the python path has a separate branch for chunks with no zero or negative value
    rng = np.random.default_rng(6)
    assert_same_fold(rng.lognormal(0, 4, 5000).tolist())
    assert_same_fold([*rng.lognormal(0, 4, 5000).tolist(), math.nan, math.inf])


def test_fold_paths_agree_on_bucket_boundaries() -> None:
    from holter.core.sketch import bucket_bounds

    values = []
    for k in range(-64 * 300, 64 * 300, 13):
        hi = bucket_bounds(k)[1]
        values += [hi, math.nextafter(hi, 0.0), math.nextafter(hi, math.inf), -hi]
    assert_same_fold(values)


@pytest.mark.parametrize(
    "values",
    [[math.nan] * 600, [math.inf, -math.inf, math.nan], [0.0] * 700, [-0.0, 0.0, -2.0], [5e-324]],
)
def test_fold_paths_agree_on_degenerate_chunks(values) -> None:
    assert_same_fold(values)


def test_fold_paths_agree_on_values_whose_sum_overflows() -> None:
    py_stats, py_bad, np_stats, np_bad = None, None, None, None
    with np.errstate(over="ignore"):
        py_stats, py_bad, np_stats, np_bad = fold_both([1e308, 1e308, 1.0])
    assert py_bad == np_bad == 0
    assert py_stats.count == np_stats.count == 3
    assert py_stats.total == np_stats.total == math.inf
    assert py_stats.max == np_stats.max == 1e308


@pytest.fixture
def numpy_toggle(monkeypatch):
    """Let a test switch the numpy fold on and off; restore the module state after."""
    monkeypatch.setattr(_cells, "_np", _cells._np)
    monkeypatch.setattr(_cells, "_numpy_state", dict(_cells._numpy_state))
    return _cells


def test_histogram_cell_gives_the_same_statistics_with_and_without_numpy(numpy_toggle) -> None:
    rng = np.random.default_rng(11)
    values = rng.lognormal(1, 2, 3000).tolist() + (-rng.lognormal(0, 1, 1000)).tolist()
    values += [0.0] * 50 + [math.nan] * 3

    def run() -> tuple[HistogramStats, dict[str, int]]:
        bad = Bad()
        cell = HistogramCell(NO_TAGS, bad, strict=False)
        for v in values:
            cell.observe(v)
        return cell.collect(), bad.reasons()

    numpy_toggle.use_numpy(False)
    assert numpy_toggle.load_numpy() is False
    slow, slow_bad = run()
    numpy_toggle.use_numpy(True)
    assert numpy_toggle.load_numpy() is True
    fast, fast_bad = run()
    assert slow_bad == fast_bad == {"not_finite": 3}
    assert slow.count == fast.count == len(values) - 3
    assert slow.sketch == fast.sketch
    assert (slow.min, slow.max) == (fast.min, fast.max)
    assert slow.total == pytest.approx(fast.total, rel=1e-12)
    assert slow.m2 == pytest.approx(fast.m2, rel=1e-9)


# -- Chan's parallel merge of moments -----------------------------------------------------


def batch_moments(batch: list[float]) -> tuple[int, float, float, float, float]:
    n = len(batch)
    return n, math.fsum(batch), min(batch), max(batch), statistics.pvariance(batch) * n


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=40),
        min_size=1,
        max_size=8,
    )
)
def test_add_batch_matches_one_shot_mean_and_variance(batches: list[list[float]]) -> None:
    stats = HistogramStats()
    for batch in batches:
        stats.add_batch(*batch_moments(batch))
    whole = [v for b in batches for v in b]
    assert stats.count == len(whole)
    assert stats.min == min(whole)
    assert stats.max == max(whole)
    spread = max(abs(v) for v in whole) + 1.0
    assert math.isclose(stats.total / stats.count, statistics.fmean(whole), abs_tol=1e-9 * spread)
    assert math.isclose(
        stats.m2 / stats.count,
        statistics.pvariance(whole),
        rel_tol=1e-7,
        abs_tol=1e-9 * spread * spread,
    )


def test_add_batch_is_stable_with_a_large_offset() -> None:
    rng = np.random.default_rng(12)
    whole = (1e9 + rng.normal(0, 1, 6000)).tolist()
    stats = HistogramStats()
    for i in range(0, len(whole), 700):
        stats.add_batch(*batch_moments(whole[i : i + 700]))
    assert stats.total / stats.count == pytest.approx(statistics.fmean(whole), rel=1e-12)
    assert stats.m2 / stats.count == pytest.approx(statistics.pvariance(whole), rel=1e-6)


def test_add_batch_of_nothing_changes_nothing() -> None:
    stats = HistogramStats()
    stats.add_batch(0, 0.0, math.inf, -math.inf, 0.0)
    assert stats.count == 0
    stats.add_batch(*batch_moments([1.0, 3.0]))
    stats.add_batch(0, 0.0, math.inf, -math.inf, 0.0)
    assert (stats.count, stats.total, stats.min, stats.max, stats.m2) == (2, 4.0, 1.0, 3.0, 2.0)


def test_folds_across_many_chunks_match_one_shot_statistics() -> None:
    rng = np.random.default_rng(13)
    whole = rng.normal(100, 15, 5000).tolist()
    stats = HistogramStats()
    for i in range(0, len(whole), 333):
        _cells.fold_into(stats, array("d", whole[i : i + 333]))
    assert stats.count == len(whole)
    assert stats.total / stats.count == pytest.approx(statistics.fmean(whole), rel=1e-12)
    assert stats.m2 / stats.count == pytest.approx(statistics.pvariance(whole), rel=1e-9)
    one_shot = Sketch()
    for v in whole:
        one_shot.add(v)
    assert stats.sketch == one_shot


@pytest.mark.parametrize(
    ("offset", "spread"),
    [(0.0, 1.0), (0.02, 0.03), (20.0, 1.0), (1e6, 1.0), (-5e8, 3.0), (1.7e9, 0.001),
     (1e12, 1.0)],
)
def test_fold_python_one_pass_variance_loses_nothing(
    offset: float, spread: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-pass m2 is used where it is as good as the two-pass sum, and only there."""
    rng = random.Random(offset)
    values = [offset + rng.gauss(0.0, spread) for _ in range(8192)]
    fast = HistogramStats()
    assert _cells._fold_python(fast, array("d", values)) == 0
    monkeypatch.setattr(_cells, "_ONE_PASS_MIN_RATIO", math.inf)  # always two-pass
    two_pass = HistogramStats()
    _cells._fold_python(two_pass, array("d", values))
    assert fast.m2 == pytest.approx(two_pass.m2, rel=1e-9)
    if abs(offset) <= 1e6:  # well conditioned: both exact to 1e-9
        exact = statistics.pvariance([Fraction(v) for v in values])
        assert fast.m2 / fast.count == pytest.approx(float(exact), rel=1e-9)
