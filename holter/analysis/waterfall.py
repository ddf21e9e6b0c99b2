"""A trace as a waterfall: the ordered span tree, self times, the critical path, bars.

Shared by every terminal view of a trace (``holter trace`` and the ``holter top``
drill-down), so both show the same tree and the same critical path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from holter.analysis.critical_path import critical_path, roots, self_times


def fmt_ns(ns: float | None) -> str:
    """A duration in ns as µs/ms/s with 3 significant digits."""
    if ns is None:
        return "-"
    if ns >= 1e9:
        return f"{ns / 1e9:.3g} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} µs"
    return f"{int(ns)} ns"


def trace_tree(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """The trace as an ordered tree with self times and its critical path."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s["parent_id"] if s["parent_id"] in ids else None
        children.setdefault(parent, []).append(s)
    for kids in children.values():
        kids.sort(key=lambda s: (s["start_ns"], s["span_id"]))
    root_ids = roots(spans)
    path = critical_path(spans, root_ids[0] if len(root_ids) == 1 else None)
    on_path = {step.span_id: step for step in path}
    own = self_times(spans)
    ordered: list[dict[str, Any]] = []
    stack = [(s, 0) for s in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        step = on_path.get(span["span_id"])
        ordered.append({**span, "depth": depth, "self_ns": own.get(span["span_id"], 0),
                        "critical_ns": step.contribution_ns if step else 0})
        stack.extend((c, depth + 1) for c in reversed(children.get(span["span_id"], [])))
    start = min(s["start_ns"] for s in spans)
    end = max(s["start_ns"] + s["duration_ns"] for s in spans)
    return {
        "trace_id": spans[0]["trace_id"],
        "start_ns": start,
        "duration_ns": end - start,
        "spans": ordered,
        "critical_path": [step.as_dict() for step in path],
    }


def timeline_bar(
    span: dict[str, Any],
    start: int,
    duration: int,
    segments: Sequence[Sequence[int]],
    width: int = 40,
) -> str:
    """A span's place in the trace as ``width`` cells: ``░`` its time, ``█`` on the path."""
    scale = width / max(duration, 1)
    a = int((span["start_ns"] - start) * scale)
    b = max(int((span["start_ns"] + span["duration_ns"] - start) * scale), a + 1)
    cells = [" "] * width
    for i in range(max(a, 0), min(b, width)):
        cells[i] = "░"
    for seg_a, seg_b in segments:
        x = int((seg_a - start) * scale)
        y = max(int((seg_b - start) * scale), x + 1)
        for i in range(max(x, 0), min(y, width)):
            cells[i] = "█"
    return "".join(cells)
