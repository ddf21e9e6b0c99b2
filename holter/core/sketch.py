"""A mergeable relative-error quantile sketch (DDSketch-style).

Values are counted in logarithmic buckets: bucket ``k`` holds the positive values in
``(γ^(k-1), γ^k]`` with ``γ = 2^(1/64)`` — the same buckets as an OpenTelemetry
exponential histogram (and a Prometheus native histogram) at scale 6, so a sketch
maps onto those wires without loss. Negative values go to a mirrored store and
zero to its own counter.

A quantile is answered with the bucket's midpoint ``2·lo·hi/(lo+hi)``, so its
relative error is at most ``(γ-1)/(γ+1) ≈ 0.54 %`` (the requirement is 1 %), as long
as no bucket was collapsed. Memory is bounded: each store keeps at most
:data:`MAX_BINS` buckets; past that the smallest-magnitude buckets are folded into
their neighbour (DDSketch's "collapsing lowest" store), which only affects
quantiles below the collapsed range. With 64 buckets per doubling, 2048 buckets
cover a ratio of 2^32 ≈ 4·10⁹ between the smallest and largest value kept exact.

Sketches merge exactly (bucket counts add), so percentiles survive merging points
of many intervals, processes and rollups.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence

SCALE = 6
"""Buckets per doubling are ``2**SCALE``; also the OTLP exponential-histogram scale."""

BUCKETS_PER_DOUBLING = 1 << SCALE
GAMMA = 2.0 ** (1.0 / BUCKETS_PER_DOUBLING)
RELATIVE_ACCURACY = (GAMMA - 1.0) / (GAMMA + 1.0)
"""Worst-case relative error of a quantile (≈ 0.0054)."""

MAX_BINS = 2048
"""Buckets kept per sign before the smallest-magnitude ones are collapsed."""

_MID_LOW = 2.0 * GAMMA / (1.0 + GAMMA)  # midpoint of (γ^(k-1), γ^k] over γ^(k-1)
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<BbQII")
_BIG_ENDIAN = sys.byteorder == "big"

_log2 = math.log2
_ceil = math.ceil


def key_of(value: float) -> int:
    """Return the bucket key of a positive value."""
    return _ceil(_log2(value) * BUCKETS_PER_DOUBLING)


def value_of(key: int) -> float:
    """Return the representative (midpoint) value of bucket ``key``."""
    try:
        return 2.0 ** ((key - 1) / BUCKETS_PER_DOUBLING) * _MID_LOW
    except OverflowError:  # the last buckets of the float range
        return sys.float_info.max


def bucket_bounds(key: int) -> tuple[float, float]:
    """Return the ``(lower, upper]`` bounds of bucket ``key``."""
    upper = 2.0 ** (key / BUCKETS_PER_DOUBLING)
    return upper / GAMMA, upper


class Sketch:
    """Bucket counts of positive, negative and zero values; see the module docstring."""

    __slots__ = ("neg", "pos", "zero")

    def __init__(self) -> None:
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0

    # -- recording (called by the collector, never on the hot path) ---------------

    def add(self, value: float, count: int = 1) -> None:
        """Count ``value`` (a finite number) ``count`` times."""
        if value > 0:
            k = _ceil(_log2(value) * BUCKETS_PER_DOUBLING)
            self.pos[k] = self.pos.get(k, 0) + count
            if len(self.pos) > MAX_BINS:
                collapse(self.pos)
        elif value < 0:
            k = _ceil(_log2(-value) * BUCKETS_PER_DOUBLING)
            self.neg[k] = self.neg.get(k, 0) + count
            if len(self.neg) > MAX_BINS:
                collapse(self.neg)
        else:
            self.zero += count

    def add_keys(self, store: dict[int, int], keys: Iterable[int], counts: Iterable[int]) -> None:
        """Add pre-computed bucket ``keys`` with ``counts`` into ``store`` (pos or neg)."""
        get = store.get
        for k, c in zip(keys, counts, strict=True):
            store[k] = get(k, 0) + c
        if len(store) > MAX_BINS:
            collapse(store)

    def add_positive_values(self, values: Sequence[float]) -> None:
        """Count many positive values (pure Python; the collector's batch path)."""
        store = self.pos
        get = store.get
        scale = float(BUCKETS_PER_DOUBLING).__mul__
        for k in map(_ceil, map(scale, map(_log2, values))):
            store[k] = get(k, 0) + 1
        if len(store) > MAX_BINS:
            collapse(store)

    def merge(self, other: Sketch) -> None:
        """Add every count of ``other`` into this sketch."""
        for mine, theirs in ((self.pos, other.pos), (self.neg, other.neg)):
            get = mine.get
            for k, c in theirs.items():
                mine[k] = get(k, 0) + c
            if len(mine) > MAX_BINS:
                collapse(mine)
        self.zero += other.zero

    def copy(self) -> Sketch:
        """Return an independent copy."""
        twin = Sketch()
        twin.pos = dict(self.pos)
        twin.neg = dict(self.neg)
        twin.zero = self.zero
        return twin

    # -- reading ---------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of values counted."""
        return sum(self.pos.values()) + sum(self.neg.values()) + self.zero

    def __len__(self) -> int:
        return len(self.pos) + len(self.neg) + (1 if self.zero else 0)

    def quantile(
        self, q: float, lo: float | None = None, hi: float | None = None
    ) -> float | None:
        """Return the ``q``-quantile (q is clamped to [0, 1]; NaN raises), or None when empty.

        ``lo`` and ``hi`` are the exact minimum and maximum, when known: answers
        are clamped to them, and q=0 / q=1 return them exactly.
        """
        return self.quantiles((q,), lo, hi)[0]

    def quantiles(
        self, qs: Sequence[float], lo: float | None = None, hi: float | None = None
    ) -> list[float | None]:
        """Return several quantiles in one pass over the buckets (``qs`` in any order)."""
        for q in qs:
            if math.isnan(q):
                raise ValueError("quantile must be a number between 0 and 1, got nan")
        total = self.count
        if total == 0:
            return [None for _ in qs]
        order = sorted(range(len(qs)), key=qs.__getitem__)
        ranks = [min(max(qs[i], 0.0), 1.0) * (total - 1) for i in order]
        answers: list[float | None] = [None] * len(qs)
        walk = self._walk()
        cum = 0
        key_value = 0.0
        for rank_index, rank in zip(order, ranks, strict=True):
            while cum <= rank:
                try:
                    key_value, c = next(walk)
                except StopIteration:
                    break
                cum += c
            answers[rank_index] = key_value
        for i, q in enumerate(qs):
            v = answers[i]
            if v is None:
                continue
            if lo is not None and (v < lo or q <= 0.0):
                v = lo
            if hi is not None and (v > hi or q >= 1.0):
                v = hi
            answers[i] = v
        return answers

    def _walk(self) -> Iterable[tuple[float, int]]:
        for k in sorted(self.neg, reverse=True):
            yield -value_of(k), self.neg[k]
        if self.zero:
            yield 0.0, self.zero
        for k in sorted(self.pos):
            yield value_of(k), self.pos[k]

    # -- storage ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise compactly (delta-encoded keys, zlib); see :meth:`from_bytes`."""
        pos_keys = sorted(self.pos)
        neg_keys = sorted(self.neg)
        keys = array("q", _deltas(pos_keys) + _deltas(neg_keys))
        counts = array("Q", [self.pos[k] for k in pos_keys] + [self.neg[k] for k in neg_keys])
        if _BIG_ENDIAN:  # pragma: no cover - stored little-endian everywhere
            keys.byteswap()
            counts.byteswap()
        header = _HEADER.pack(_FORMAT_VERSION, SCALE, self.zero, len(pos_keys), len(neg_keys))
        return zlib.compress(header + keys.tobytes() + counts.tobytes(), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sketch:
        """Rebuild a sketch written by :meth:`to_bytes`; ValueError if it is not one."""
        try:
            raw = zlib.decompress(data)
            version, scale, zero, npos, nneg = _HEADER.unpack_from(raw)
        except (zlib.error, struct.error, TypeError) as exc:
            raise ValueError(f"not a holter sketch ({len(data or b'')} bytes): {exc}") from None
        if version != _FORMAT_VERSION or scale != SCALE:
            raise ValueError(f"unsupported sketch format version={version} scale={scale}")
        n = npos + nneg
        if len(raw) != _HEADER.size + 16 * n:
            raise ValueError(
                f"not a holter sketch: {n} buckets announced, {len(raw) - _HEADER.size} bytes "
                "of bucket data"
            )
        keys = array("q")
        counts = array("Q")
        start = _HEADER.size
        keys.frombytes(raw[start : start + 8 * n])
        counts.frombytes(raw[start + 8 * n : start + 16 * n])
        if _BIG_ENDIAN:  # pragma: no cover
            keys.byteswap()
            counts.byteswap()
        sketch = cls()
        sketch.zero = zero
        sketch.pos = dict(zip(_undeltas(keys[:npos]), counts[:npos], strict=True))
        sketch.neg = dict(zip(_undeltas(keys[npos:]), counts[npos:], strict=True))
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sketch):
            return NotImplemented
        return self.pos == other.pos and self.neg == other.neg and self.zero == other.zero

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Sketch(count={self.count}, buckets={len(self)})"


def merge_bytes(blobs: Iterable[bytes | None]) -> Sketch:
    """Merge serialised sketches (None entries are skipped) into one sketch."""
    merged = Sketch()
    pos = merged.pos
    neg = merged.neg
    for blob in blobs:
        if not blob:
            continue
        part = Sketch.from_bytes(blob)
        get = pos.get
        for k, c in part.pos.items():
            pos[k] = get(k, 0) + c
        get = neg.get
        for k, c in part.neg.items():
            neg[k] = get(k, 0) + c
        merged.zero += part.zero
    for store in (pos, neg):
        if len(store) > MAX_BINS:
            collapse(store)
    return merged


def collapse(store: dict[int, int]) -> None:
    """Fold the smallest keys into the smallest kept key until MAX_BINS remain."""
    keys = sorted(store)
    excess = len(keys) - MAX_BINS
    if excess <= 0:
        return
    folded = 0
    for k in keys[:excess]:
        folded += store.pop(k)
    store[keys[excess]] += folded


def _deltas(keys: list[int]) -> list[int]:
    prev = 0
    out = []
    for k in keys:
        out.append(k - prev)
        prev = k
    return out


def _undeltas(deltas: Iterable[int]) -> list[int]:
    total = 0
    out = []
    for d in deltas:
        total += d
        out.append(total)
    return out
