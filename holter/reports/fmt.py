"""Formatting shared by the Markdown and HTML renderers: numbers, durations, times."""

from __future__ import annotations

import math
from datetime import UTC, datetime

_TIME_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_BLOCKS = "▁▂▃▄▅▆▇█"


def num(value: float | None, unit: str = "") -> str:
    """A short human form of a number (3 significant digits), with its unit.

    Durations (units s, ms, µs, ns) are shown in the best unit; bytes (``By``) in
    KiB/MiB/GiB; ``%`` sticks to the number.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if unit in _TIME_TO_S:
        return seconds(value * _TIME_TO_S[unit])
    if unit == "By":
        return size(value)
    if unit == "%":
        return f"{value:.3g}%"
    if unit == "×":
        return f"{value:.3g}×"
    magnitude = abs(value)
    if magnitude == 0:
        text = "0"
    elif magnitude >= 1e9:
        text = f"{value / 1e9:.3g}G"
    elif magnitude >= 1e6:
        text = f"{value / 1e6:.3g}M"
    elif magnitude >= 1e4:
        text = f"{value / 1e3:.3g}k"
    elif float(value).is_integer():
        text = str(int(value))
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}" if unit and unit != "1" else text


def seconds(value: float | None) -> str:
    """A duration in seconds as d, h, min, s, ms, µs or ns (3 significant digits)."""
    if value is None or not math.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 2 * 86400:
        return f"{value / 86400:.3g} d"
    if magnitude >= 2 * 3600:
        return f"{value / 3600:.3g} h"
    if magnitude >= 120:
        return f"{value / 60:.3g} min"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.3g} s"
    if magnitude >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    if magnitude >= 1e-6:
        return f"{value * 1e6:.3g} µs"
    return f"{value * 1e9:.3g} ns"


def size(value: float) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    for unit, step in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= step:
            return f"{value / step:.3g} {unit}"
    return f"{value:.0f} B"


def when(ns: int | None) -> str:
    """An epoch-nanoseconds time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(ratio: float | None) -> str:
    """A ratio as a percentage."""
    if ratio is None or not math.isfinite(ratio):
        return "-"
    return f"{ratio * 100:.3g}%"


def tags(values: dict[str, str]) -> str:
    """``{"a": "1", "b": "x"}`` → ``a=1 b=x``."""
    return " ".join(f"{k}={v}" for k, v in sorted(values.items()))


def sparkline(values: list[float | None]) -> str:
    """Unicode block sparkline; gaps (None) are spaces."""
    got = [v for v in values if v is not None and math.isfinite(v)]
    if not got:
        return ""
    lo, hi = min(got), max(got)
    span = hi - lo
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif span <= 0:
            out.append(_BLOCKS[0])
        else:
            out.append(_BLOCKS[min(int((v - lo) / span * len(_BLOCKS)), len(_BLOCKS) - 1)])
    return "".join(out)


__all__ = ["num", "percent", "seconds", "size", "sparkline", "tags", "when"]
