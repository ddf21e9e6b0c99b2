"""Text for the terminal dashboard: numbers with units, sparklines, bars, thresholds.

Plain functions of values (no Textual), so the model can format rows off the UI thread
and tests can check the text a user sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

SPARK_CHARS = "▁▂▃▄▅▆▇█"
"""Sparkline cells, lowest first; a step without data is a space."""

_DURATION_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_BYTE_UNITS = {"By": 1, "KiBy": 1024, "MiBy": 1024**2, "GiBy": 1024**3}


def number(value: float | None) -> str:
    """A short form of a number: 3 significant digits, k/M/G for large ones."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1e9:
        return f"{value / 1e9:.3g}G"
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4 or (magnitude >= 1e3 and not float(value).is_integer()):
        return f"{value / 1e3:.3g}k"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


def duration(seconds: float | None) -> str:
    """Seconds as ns/µs/ms/s/min with 3 significant digits."""
    if seconds is None:
        return "-"
    magnitude = abs(seconds)
    if magnitude == 0:
        return "0s"
    if magnitude >= 120:
        return f"{seconds / 60:.3g}m"
    if magnitude >= 1:
        return f"{seconds:.3g}s"
    if magnitude >= 1e-3:
        return f"{seconds * 1e3:.3g}ms"
    if magnitude >= 1e-6:
        return f"{seconds * 1e6:.3g}µs"
    return f"{seconds * 1e9:.3g}ns"


def size(n_bytes: float | None) -> str:
    """Bytes as B/KB/MB/GB (powers of 1024) with 3 significant digits."""
    if n_bytes is None:
        return "-"
    value = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.3g}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{value:.3g}TB"  # pragma: no cover - the loop returns first


def with_unit(value: float | None, unit: str) -> str:
    """A value of a series in its unit: durations, bytes, percent, or a plain number."""
    if value is None:
        return "-"
    if unit in _DURATION_UNITS:
        return duration(value * _DURATION_UNITS[unit])
    if unit in _BYTE_UNITS:
        return size(value * _BYTE_UNITS[unit])
    if unit == "%":
        return f"{value:.3g}%" if abs(value) < 1000 else f"{value:.0f}%"
    return number(value)


def ago(ns: int | None, now_ns: int) -> str:
    """How long before ``now_ns``: ``4s``, ``3m``, ``2h``, ``5d`` (``-`` for None)."""
    if ns is None:
        return "-"
    seconds = max(now_ns - ns, 0) / 1e9
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def clock(ns: int | None) -> str:
    """Local wall-clock time ``HH:MM:SS`` of an epoch-nanoseconds value."""
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S")


def sparkline(values: Sequence[float | None], width: int) -> str:
    """``values`` (oldest first; None = no data) as ``width`` cells, scaled min..max.

    More values than cells are merged by the mean of each group (the newest values
    keep the rightmost cells); fewer are padded with spaces on the left.
    """
    if width <= 0:
        return ""
    groups: list[float | None]
    if len(values) > width:
        groups = []
        n = len(values)
        for i in range(width):
            a = n - (width - i) * n // width
            b = n - (width - i - 1) * n // width
            part = [v for v in values[a:b] if v is not None]
            groups.append(sum(part) / len(part) if part else None)
    else:
        groups = [None] * (width - len(values)) + list(values)
    present = [v for v in groups if v is not None and math.isfinite(v)]
    if not present:
        return " " * width
    lo = min(present)
    hi = max(present)
    span = hi - lo
    top = len(SPARK_CHARS) - 1
    out = []
    for v in groups:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif span <= 0:
            out.append(SPARK_CHARS[top // 2] if hi else SPARK_CHARS[0])
        else:
            out.append(SPARK_CHARS[round((v - lo) / span * top)])
    return "".join(out)


def bar(fraction: float | None, width: int) -> str:
    """A horizontal bar of ``width`` cells filled to ``fraction`` (0..1): ``████░░░░``."""
    if width <= 0:
        return ""
    if fraction is None or not math.isfinite(fraction):
        return "·" * width
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "█" * filled + "░" * (width - filled)


def level(value: float | None, warn: float, crit: float) -> str:
    """``"ok"``, ``"warn"`` or ``"crit"`` for a value against two thresholds (``"none"``)."""
    if value is None or not math.isfinite(value):
        return "none"
    if value >= crit:
        return "crit"
    if value >= warn:
        return "warn"
    return "ok"


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"
