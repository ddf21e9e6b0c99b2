"""Critical path and self time of a trace: pure functions over span records.

The critical path is the chain of spans that determines a trace's end-to-end time.
Walking back from the root's end, the critical child at each moment is the child
that finished last before that moment; the parent itself is critical wherever no
child is running on the path. Children running in parallel with the critical one
are off the path, however long they are; children overlapping each other are cut
where the next critical child takes over; children that end after their parent
(or start before it, with clock skew) are clipped to the parent.

Self time of a span is its duration minus the union of its children's intervals
(clipped to the span), so parallel children are not subtracted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PathStep:
    """One span on the critical path and the time it contributes to it."""

    span_id: str
    name: str
    contribution_ns: int
    segments: tuple[tuple[int, int], ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "span_id": self.span_id,
            "name": self.name,
            "contribution_ns": self.contribution_ns,
            "segments": [list(s) for s in self.segments],
        }


@dataclass(frozen=True, slots=True)
class _S:
    span_id: str
    parent_id: str | None
    name: str
    start: int
    end: int


def _spans(records: Iterable[Mapping[str, Any]]) -> list[_S]:
    out = []
    for r in records:
        start = int(r["start_ns"])
        out.append(_S(str(r["span_id"]), r.get("parent_id"), str(r.get("name", "")), start,
                      start + max(int(r["duration_ns"]), 0)))
    return out


def roots(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ids of the spans whose parent is not in the trace, earliest first."""
    spans = _spans(records)
    ids = {s.span_id for s in spans}
    return [s.span_id for s in sorted(spans, key=lambda s: (s.start, -s.end))
            if s.parent_id is None or s.parent_id not in ids]


def critical_path(
    records: Sequence[Mapping[str, Any]], root_id: str | None = None
) -> list[PathStep]:
    """The critical path of a trace, in time order, with each span's contribution.

    ``records`` are mappings with ``span_id``, ``parent_id``, ``name``, ``start_ns``
    and ``duration_ns``. The root is ``root_id``, or else the root span that ends last
    (a trace with several roots, e.g. a lost parent, is judged by its longest part).
    """
    spans = _spans(records)
    if not spans:
        return []
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[_S]] = {}
    for s in spans:
        if s.parent_id is not None and s.parent_id in by_id and s.parent_id != s.span_id:
            children.setdefault(s.parent_id, []).append(s)
    if root_id is not None and root_id in by_id:
        root = by_id[root_id]
    else:
        candidates = [s for s in spans if s.parent_id is None or s.parent_id not in by_id]
        root = max(candidates or spans, key=lambda s: (s.end - s.start, -s.start))

    segments: list[tuple[_S, int, int]] = []
    # Iterative (deep traces must not hit the recursion limit). Each entry carries the
    # window the span may occupy on the path: (latest end, earliest start).
    stack: list[tuple[_S, int, int]] = [(root, root.end, root.start)]
    visited: set[str] = set()
    while stack:
        span, limit, floor = stack.pop()
        if span.span_id in visited:  # a cycle in bad data: stop there
            continue
        visited.add(span.span_id)
        start = max(span.start, floor)
        t = min(span.end, limit)
        # Children by end, latest first. t only decreases, so a child starting at or after
        # t can never be on the path again and is skipped for good: one pass, O(k log k).
        kids = sorted(children.get(span.span_id, ()), key=lambda c: c.end, reverse=True)
        chosen: list[tuple[_S, int, int]] = []
        for child in kids:
            if t <= start:
                break
            if child.start >= t or child.end <= start:
                continue
            c_end = min(child.end, t)
            if c_end < t:
                segments.append((span, c_end, t))
            chosen.append((child, c_end, start))
            t = max(child.start, start)
        if t > start:
            segments.append((span, start, t))
        stack.extend(chosen)
    return _steps(segments)


def _steps(segments: list[tuple[_S, int, int]]) -> list[PathStep]:
    per_span: dict[str, list[tuple[int, int]]] = {}
    names: dict[str, str] = {}
    for span, a, b in segments:
        if b > a:
            per_span.setdefault(span.span_id, []).append((a, b))
            names[span.span_id] = span.name
    ordered = sorted(per_span.items(), key=lambda item: min(a for a, _ in item[1]))
    return [
        PathStep(sid, names[sid], sum(b - a for a, b in segs), tuple(sorted(segs)))
        for sid, segs in ordered
    ]


def self_times(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each span's duration minus the union of its children's intervals, by span id."""
    spans = _spans(records)
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[tuple[int, int]]] = {}
    for s in spans:
        parent = by_id.get(s.parent_id) if s.parent_id is not None else None
        if parent is not None and parent.span_id != s.span_id:
            a = max(s.start, parent.start)
            b = min(s.end, parent.end)
            if b > a:
                children.setdefault(parent.span_id, []).append((a, b))
    out = {}
    for s in spans:
        covered = _union_length(children.get(s.span_id, []))
        out[s.span_id] = max(s.end - s.start - covered, 0)
    return out


def _union_length(intervals: list[tuple[int, int]]) -> int:
    total = 0
    cur_a = cur_b = None
    for a, b in sorted(intervals):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a  # type: ignore[operator]
            cur_a, cur_b = a, b
        elif b > cur_b:
            cur_b = b
    if cur_b is not None:
        total += cur_b - cur_a  # type: ignore[operator]
    return total
