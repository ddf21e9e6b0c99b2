"""The relative-error sketch: accuracy against exact quantiles, merge invariants, bounded memory.

Modelled on sketches-py's ``tests/test_ddsketch.py``: every answer is compared with
the exact value at the same rank, computed here from sorted data. ``Sketch.quantiles``
answers the *lower* quantile: the value at 0-based rank ``floor(q * (n - 1))``.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holter.core import sketch as sk
from holter.core.sketch import (
    GAMMA,
    MAX_BINS,
    RELATIVE_ACCURACY,
    Sketch,
    bucket_bounds,
    key_of,
    merge_bytes,
    value_of,
)

QS = (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
N = 20_000
# A little room for floating-point rounding of the bucket arithmetic itself.
SLACK = 1e-9


def exact_lower_quantile(ordered: list[float], q: float) -> float:
    """The value at 0-based rank floor(q * (n - 1)) of already sorted data."""
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_within_accuracy(answer: float | None, exact: float, what: str = "") -> None:
    assert answer is not None, what
    if exact == 0:
        assert answer == 0, f"{what}: expected exactly 0, got {answer!r}"
        return
    error = abs(answer - exact) / abs(exact)
    assert error <= RELATIVE_ACCURACY * (1 + SLACK), (
        f"{what}: answer {answer!r} vs exact {exact!r}: relative error {error:.5%} "
        f"> {RELATIVE_ACCURACY:.5%}"
    )


def sketch_of(values) -> Sketch:
    s = Sketch()
    for v in values:
        s.add(v)
    return s


def _distributions() -> dict[str, list[float]]:
    rng = np.random.default_rng(20_240_601)
    half = N // 2
    mixed = np.concatenate(
        [
            rng.normal(0.0, 100.0, N - N // 10 - N // 5),
            np.zeros(N // 10),
            -rng.lognormal(3.0, 1.5, N // 5),
        ]
    )
    data = {
        "uniform": rng.uniform(0.0, 1000.0, N),
        "lognormal": rng.lognormal(0.0, 2.0, N),
        "pareto": rng.pareto(1.1, N) + 1.0,  # heavy tail: p99.9 is far from p50
        "bimodal": np.concatenate([rng.normal(50.0, 5.0, half), rng.normal(5000.0, 200.0, half)]),
        "negative_zero_positive": mixed,
        "negative_only": -rng.lognormal(1.0, 1.0, N),
        "tiny": rng.uniform(1e-9, 1e-6, N),
        "integers_with_ties": rng.integers(0, 20, N).astype(float),
    }
    out = {}
    for name, values in data.items():
        values = values.tolist()
        rng.shuffle(values)  # arrival order must not matter
        out[name] = values
    return out


DISTRIBUTIONS = _distributions()


# -- buckets ----------------------------------------------------------------------------


def test_relative_accuracy_meets_the_requirement() -> None:
    gamma = 2.0 ** (1.0 / 64)
    assert pytest.approx(gamma, rel=1e-15) == GAMMA
    assert pytest.approx((gamma - 1) / (gamma + 1), rel=1e-12) == RELATIVE_ACCURACY
    assert 0.0053 < RELATIVE_ACCURACY < 0.0055
    assert RELATIVE_ACCURACY < 0.01  # the documented requirement


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-300, max_value=1e300))
def test_a_value_lies_in_its_bucket_and_near_its_representative(v: float) -> None:
    k = key_of(v)
    lo, hi = bucket_bounds(k)
    assert hi / lo == pytest.approx(GAMMA, rel=1e-12)
    assert lo * (1 - 1e-12) <= v <= hi * (1 + 1e-12)
    rep = value_of(k)
    assert lo < rep <= hi
    assert abs(rep - v) / v <= RELATIVE_ACCURACY * (1 + SLACK)


def test_bucket_keys_are_monotonic_and_scale_six() -> None:
    # 64 buckets per doubling: 2**j is the upper bound of bucket 64*j
    for j in (-40, -1, 0, 1, 10, 300):
        assert key_of(2.0**j) == 64 * j
        assert key_of(2.0**j * 1.0001) == 64 * j + 1
    values = sorted(np.random.default_rng(1).lognormal(0, 5, 2000).tolist())
    keys = [key_of(v) for v in values]
    assert keys == sorted(keys)


# -- accuracy against exact quantiles ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_are_within_relative_accuracy_of_exact(name: str) -> None:
    values = DISTRIBUTIONS[name]
    ordered = sorted(values)
    s = sketch_of(values)
    assert s.count == len(values)
    answers = s.quantiles(QS)
    for q, answer in zip(QS, answers, strict=True):
        assert_within_accuracy(answer, exact_lower_quantile(ordered, q), f"{name} q={q}")
    # one-at-a-time agrees with the one-pass form
    assert [s.quantile(q) for q in QS] == answers


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_clamped_to_exact_min_and_max(name: str) -> None:
    values = DISTRIBUTIONS[name]
    ordered = sorted(values)
    lo, hi = ordered[0], ordered[-1]
    s = sketch_of(values)
    answers = s.quantiles(QS, lo, hi)
    assert answers[0] == lo  # q=0 is the exact minimum
    assert answers[-1] == hi  # q=1 is the exact maximum
    for q, answer in zip(QS, answers, strict=True):
        assert lo <= answer <= hi
        assert_within_accuracy(answer, exact_lower_quantile(ordered, q), f"{name} q={q}")


def test_bimodal_quantiles_land_in_the_right_mode() -> None:
    values = DISTRIBUTIONS["bimodal"]
    s = sketch_of(values)
    p25, p49, p51, p75 = s.quantiles((0.25, 0.49, 0.51, 0.75))
    assert 20 < p25 < 80 and 20 < p49 < 80
    assert 4000 < p51 < 6000 and 4000 < p75 < 6000


def test_quantiles_accept_any_order_and_repeats() -> None:
    values = DISTRIBUTIONS["lognormal"]
    s = sketch_of(values)
    qs = (0.9, 0.1, 0.5, 0.9, 1.0, 0.0)
    assert s.quantiles(qs) == [s.quantile(q) for q in qs]
    ordered = sorted(values)
    for q, answer in zip(qs, s.quantiles(qs), strict=True):
        assert_within_accuracy(answer, exact_lower_quantile(ordered, q))


def test_quantiles_outside_zero_one_are_clamped() -> None:
    s = sketch_of([1.0, 2.0, 3.0])
    assert s.quantile(-0.5) == s.quantile(0.0)
    assert s.quantile(1.5) == s.quantile(1.0)


def test_empty_sketch_has_no_quantiles() -> None:
    s = Sketch()
    assert s.count == 0
    assert len(s) == 0
    assert s.quantile(0.5) is None
    assert s.quantiles((0.0, 0.5, 1.0), lo=1.0, hi=2.0) == [None, None, None]


@pytest.mark.parametrize("v", [-1234.5, -1e-9, 0.0, 1e-9, 1.0, 7.25, 3e15])
def test_single_value(v: float) -> None:
    s = sketch_of([v])
    for q in QS:
        assert_within_accuracy(s.quantile(q), v)
        assert s.quantile(q, lo=v, hi=v) == v


def test_zero_and_negatives_are_counted_apart() -> None:
    s = sketch_of([-2.0, -2.0, 0.0, 0.0, 0.0, 3.0, -0.0])
    assert s.zero == 4  # -0.0 is zero
    assert sum(s.neg.values()) == 2
    assert sum(s.pos.values()) == 1
    assert s.count == 7
    assert len(s) == 3  # one negative bucket, the zero counter, one positive bucket
    assert s.quantile(0.5) == 0.0


finite_nonzero = st.floats(min_value=1e-300, max_value=1e300)
measurements = st.one_of(
    st.just(0.0),
    finite_nonzero,
    finite_nonzero.map(lambda v: -v),
    st.integers(-50, 50).map(float),  # ties
)


@settings(max_examples=200, deadline=None)
@given(st.lists(measurements, min_size=1, max_size=200), st.sampled_from(QS))
def test_any_data_any_quantile_within_accuracy(values: list[float], q: float) -> None:
    ordered = sorted(values)
    s = sketch_of(values)
    assert_within_accuracy(s.quantile(q), exact_lower_quantile(ordered, q), f"q={q}")
    clamped = s.quantile(q, ordered[0], ordered[-1])
    assert ordered[0] <= clamped <= ordered[-1]
    assert_within_accuracy(clamped, exact_lower_quantile(ordered, q), f"clamped q={q}")


def test_largest_finite_values_have_quantiles() -> None:
    # the top buckets of the float range: their upper bound 2**1024 is not a float
    for v in (1.79e308, 1.7976931348623157e308, 1.785e308):
        s = sketch_of([v, -v])
        assert_within_accuracy(s.quantile(1.0), v)
        assert_within_accuracy(s.quantile(0.0), -v)
        assert s.quantile(1.0, lo=-v, hi=v) == v


# -- merging and serialising -------------------------------------------------------------

parts_strategy = st.lists(st.lists(measurements, max_size=60), min_size=1, max_size=6)


def merged(sketches: list[Sketch]) -> Sketch:
    out = Sketch()
    for s in sketches:
        out.merge(s)
    return out


@settings(max_examples=150, deadline=None)
@given(parts_strategy)
def test_merge_of_parts_equals_sketch_of_whole(parts: list[list[float]]) -> None:
    whole = sketch_of([v for part in parts for v in part])
    combined = merged([sketch_of(p) for p in parts])
    assert combined.pos == whole.pos
    assert combined.neg == whole.neg
    assert combined.zero == whole.zero
    assert combined == whole
    assert combined.count == sum(len(p) for p in parts)


@settings(max_examples=150, deadline=None)
@given(st.lists(measurements, max_size=80), st.lists(measurements, max_size=80))
def test_merge_is_commutative_and_leaves_its_argument_alone(a: list[float], b: list[float]) -> None:
    sa, sb = sketch_of(a), sketch_of(b)
    sb_before = sb.copy()
    ab = sa.copy()
    ab.merge(sb)
    ba = sb.copy()
    ba.merge(sa)
    assert ab == ba
    assert sb == sb_before


@settings(max_examples=150, deadline=None)
@given(
    st.lists(measurements, max_size=60),
    st.lists(measurements, max_size=60),
    st.lists(measurements, max_size=60),
)
def test_merge_is_associative(a: list[float], b: list[float], c: list[float]) -> None:
    sa, sb, sc = sketch_of(a), sketch_of(b), sketch_of(c)
    left = sa.copy()
    left.merge(sb)
    left.merge(sc)
    bc = sb.copy()
    bc.merge(sc)
    right = sa.copy()
    right.merge(bc)
    assert left == right


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts_strategy)
def test_merge_invariants_hold_when_buckets_collapse(parts: list[list[float]]) -> None:
    # A small bucket cap makes collapsing happen on every example; the collapsed
    # result must still not depend on how the data was split or ordered.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sk, "MAX_BINS", 5)
        whole = sketch_of([v for part in parts for v in part])
        pieces = [sketch_of(p) for p in parts]
        forward = merged(pieces)
        backward = merged(list(reversed(pieces)))
        from_blobs = merge_bytes([p.to_bytes() for p in pieces])
        assert len(whole.pos) <= 5 and len(whole.neg) <= 5
        assert forward == whole
        assert backward == whole
        assert from_blobs == whole
        assert whole.count == sum(len(p) for p in parts)


@settings(max_examples=200, deadline=None)
@given(st.lists(measurements, max_size=200))
def test_bytes_round_trip_is_exact(values: list[float]) -> None:
    s = sketch_of(values)
    blob = s.to_bytes()
    assert isinstance(blob, bytes)
    back = Sketch.from_bytes(blob)
    assert back == s
    assert back.pos == s.pos and back.neg == s.neg and back.zero == s.zero
    assert back.quantiles(QS) == s.quantiles(QS)
    assert back.to_bytes() == blob  # deterministic encoding


def test_bytes_round_trip_of_extreme_keys() -> None:
    s = Sketch()
    s.pos = {-68_000: 3, -1: 1, 0: 2**40, 65_535: 7}
    s.neg = {-5: 1, 60_000: 2**63 + 5}
    s.zero = 2**50
    assert Sketch.from_bytes(s.to_bytes()) == s


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.just(b""), st.lists(measurements, max_size=40)),
        max_size=8,
    )
)
def test_merge_bytes_equals_sequential_merge(parts) -> None:
    blobs = [p if p is None or isinstance(p, bytes) else sketch_of(p).to_bytes() for p in parts]
    expected = Sketch()
    for p in parts:
        if isinstance(p, list):
            expected.merge(sketch_of(p))
    assert merge_bytes(blobs) == expected


def test_copy_is_independent() -> None:
    s = sketch_of([1.0, -1.0, 0.0])
    twin = s.copy()
    twin.add(5.0)
    twin.add(-5.0)
    twin.add(0.0)
    assert s.count == 3
    assert twin.count == 6
    assert s != twin


def test_sketches_are_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(Sketch())


def _header(version: int, scale: int, zero: int, npos: int, nneg: int) -> bytes:
    return struct.pack("<BbQII", version, scale, zero, npos, nneg)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"garbage",
        b"\x00" * 64,
        zlib.compress(b""),
        zlib.compress(b"short"),
        zlib.compress(_header(2, 6, 0, 0, 0)),  # unknown format version
        zlib.compress(_header(1, 5, 0, 0, 0)),  # another scale
        zlib.compress(_header(1, 6, 0, 2, 0) + b"\x01" * 20),  # not whole 8-byte words
        zlib.compress(_header(1, 6, 0, 2, 1) + b"\x00" * 40),  # fewer counts than keys
        None,
        "not bytes",
    ],
)
def test_from_bytes_rejects_garbage_with_value_error(blob) -> None:
    with pytest.raises(ValueError):
        Sketch.from_bytes(blob)


@pytest.mark.parametrize("cut", [0, 8, 16, -8, -1])
def test_from_bytes_rejects_a_truncated_payload(cut: int) -> None:
    s = sketch_of([1.0, 2.0, 3.0, -4.0])
    raw = zlib.decompress(s.to_bytes())
    header = struct.calcsize("<BbQII")
    body = raw[: header + cut] if cut >= 0 else raw[:cut]
    with pytest.raises(ValueError):
        Sketch.from_bytes(zlib.compress(body))


def test_from_bytes_rejects_trailing_bytes() -> None:
    raw = zlib.decompress(sketch_of([1.0, 2.0]).to_bytes())
    with pytest.raises(ValueError):
        Sketch.from_bytes(zlib.compress(raw + b"\0" * 16))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_from_bytes_on_arbitrary_bytes_raises_only_value_error(blob: bytes) -> None:
    for candidate in (blob, zlib.compress(blob)):
        try:
            result = Sketch.from_bytes(candidate)
        except ValueError:
            continue
        assert isinstance(result, Sketch)


# -- bounded memory ----------------------------------------------------------------------


def _log_uniform(n: int, low_exp: float, high_exp: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return (10.0 ** rng.uniform(low_exp, high_exp, n)).tolist()


def _check_collapsed_high_quantiles(s: Sketch, ordered: list[float]) -> None:
    """Quantiles above the collapsed range are accurate; below it they only overestimate."""
    smallest_kept_upper = bucket_bounds(min(s.pos))[1]
    for q in (0.99, 0.999, 1.0):
        exact = exact_lower_quantile(ordered, q)
        assert exact > smallest_kept_upper  # the test is about un-collapsed buckets
        assert_within_accuracy(s.quantile(q), exact, f"q={q}")
    for q in (0.0, 0.01, 0.5):
        assert s.quantile(q) >= exact_lower_quantile(ordered, q) * (1 - RELATIVE_ACCURACY)


def test_huge_range_is_bounded_batch_path() -> None:
    values = _log_uniform(30_000, -300, 300, seed=7)
    s = Sketch()
    s.add_positive_values(values)
    assert len(s.pos) <= MAX_BINS
    assert len(s.pos) == MAX_BINS  # the range needs far more buckets than the cap
    assert s.count == len(values)
    _check_collapsed_high_quantiles(s, sorted(values))


def test_huge_range_is_bounded_one_value_at_a_time() -> None:
    values = _log_uniform(4_000, -300, 300, seed=8)
    s = Sketch()
    for i, v in enumerate(values):
        s.add(v)
        s.add(-v)
        if i % 97 == 0:
            assert len(s.pos) <= MAX_BINS and len(s.neg) <= MAX_BINS
    assert len(s.pos) <= MAX_BINS and len(s.neg) <= MAX_BINS
    assert s.count == 2 * len(values)
    ordered = sorted(values)
    # positives: the top of the range is exact-bucketed
    positives = Sketch()
    positives.pos = dict(s.pos)
    _check_collapsed_high_quantiles(positives, ordered)
    # negatives: the most negative values (largest magnitude) keep their accuracy
    everything = sorted([-v for v in values] + values)
    for q in (0.0, 0.0005):
        assert_within_accuracy(s.quantile(q), exact_lower_quantile(everything, q), f"q={q}")


def test_merging_collapsed_sketches_stays_bounded_and_exact() -> None:
    values = _log_uniform(20_000, -300, 300, seed=9)
    parts = [values[i::4] for i in range(4)]
    pieces = []
    for part in parts:
        piece = Sketch()
        piece.add_positive_values(part)
        assert len(piece.pos) == MAX_BINS
        pieces.append(piece)
    whole = Sketch()
    whole.add_positive_values(values)
    combined = merged(pieces)
    assert len(combined.pos) <= MAX_BINS
    assert combined == whole
    assert merge_bytes([p.to_bytes() for p in pieces]) == whole
    _check_collapsed_high_quantiles(combined, sorted(values))


def test_values_within_the_cap_range_are_never_collapsed() -> None:
    # 2048 buckets at 64 per doubling cover a ratio of 2**32: no collapsing below it
    values = _log_uniform(20_000, 0, 9.5, seed=10)  # ratio 10**9.5 < 2**32
    s = Sketch()
    s.add_positive_values(values)
    assert len(s.pos) < MAX_BINS
    ordered = sorted(values)
    for q in QS:
        assert_within_accuracy(s.quantile(q), exact_lower_quantile(ordered, q), f"q={q}")
