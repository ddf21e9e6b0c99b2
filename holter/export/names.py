r"""Prometheus names for holter metrics: deterministic, documented, never failing.

The rules (README, "Prometheus names"):

1. **Metric name**: every character outside ``[a-zA-Z0-9_:]`` becomes ``_`` (so ``.``,
   ``/`` and ``-`` do), runs of ``_`` become one, and a name that would start with a
   digit gets a leading ``_``. An empty result becomes ``holter_metric``.
2. **Unit suffix**: the unit is spelled out (``s`` → ``seconds``, ``ms`` →
   ``milliseconds``, ``By`` → ``bytes``, ``1`` → ``ratio``, ``%`` → ``percent``, ``a/b``
   → ``a_per_b``; :data:`UNIT_WORDS` lists them; other units are cleaned by rule 1;
   ``{annotations}`` are dropped) and appended unless the name already ends with it.
3. **Type suffix**: counters end in ``_total`` (not added twice). Histograms are
   summaries (``name{quantile=...}``, ``name_sum``, ``name_count``) or, with buckets,
   Prometheus histograms (``name_bucket{le=...}``, ``name_sum``, ``name_count``).
4. **Collisions**: two holter metrics (name, kind, unit) that would produce the same
   sample name are told apart: the family that sorts first by (holter name, kind, unit)
   keeps the name, each other gets ``_`` + the first 8 hex digits of the SHA-1 of
   ``"name|kind|unit"`` appended before the type suffix.
5. **Labels**: tag keys follow rule 1 (``http.method`` → ``http_method``); a key that
   starts with ``__`` (reserved by Prometheus) or that is one of the labels the exporter
   adds (``app``, ``quantile``, ``le``) gets the prefix ``tag_``. Two keys that clean to
   the same label keep the value of the key that sorts first.
6. **Label values** are any UTF-8; in the text format ``\``, ``"`` and line feeds are
   escaped (``\\``, ``\"``, ``\n``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

UNIT_WORDS: dict[str, str] = {
    "ns": "nanoseconds",
    "us": "microseconds",
    "μs": "microseconds",
    "ms": "milliseconds",
    "s": "seconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "By": "bytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tebibytes",
    "B": "bytes",
    "bytes": "bytes",
    "bit": "bits",
    "Hz": "hertz",
    "%": "percent",
    "1": "ratio",
    "Cel": "celsius",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "W": "watts",
    "J": "joules",
}
"""Units spelled out in Prometheus names (UCUM symbols as OpenTelemetry uses them)."""

RESERVED_LABELS = frozenset({"app", "quantile", "le"})
"""Labels the exporter sets itself; tags with these keys are renamed ``tag_<key>``."""

APP_LABEL = "app"
"""The label carrying the app name of the runs that recorded a series."""

_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORES = re.compile(r"__+")
_ANNOTATION = re.compile(r"\{[^}]*\}")


def clean_name(name: str) -> str:
    """Rule 1: a valid Prometheus metric name made from ``name`` (never raises)."""
    text = _UNDERSCORES.sub("_", _BAD_NAME_CHARS.sub("_", str(name)))
    if not text or text == "_":
        return "holter_metric"
    if text[0].isdigit():
        text = "_" + text
    return text


def unit_suffix(unit: str | None) -> str:
    """Rule 2: the word appended for ``unit`` (``""`` when there is none)."""
    if not unit:
        return ""
    text = _ANNOTATION.sub("", str(unit)).strip()
    if not text:
        return ""
    if "/" in text:
        parts = [unit_suffix(part) for part in text.split("/", 1)]
        return "_per_".join(p for p in parts if p) if all(parts) else "".join(parts)
    word = UNIT_WORDS.get(text)
    if word is None:
        word = _UNDERSCORES.sub("_", _BAD_LABEL_CHARS.sub("_", text)).strip("_")
    return word


def base_name(name: str, unit: str | None, kind: str = "gauge") -> str:
    """Rules 1 and 2: cleaned name with its unit suffix (no type suffix).

    For a counter a trailing ``_total`` is taken off first (it is added back as the type
    suffix), so the unit goes before it: ``bytes.sent_total`` (By) → ``bytes_sent_bytes``.
    """
    base = clean_name(name)
    if kind == "counter" and base.endswith("_total"):
        base = base[: -len("_total")] or "holter_metric"
    suffix = unit_suffix(unit)
    if suffix and not (base == suffix or base.endswith("_" + suffix)):
        base = f"{base}_{suffix}"
    return base


def label_name(key: str) -> str:
    """Rule 5: the Prometheus label of tag ``key``."""
    text = _UNDERSCORES.sub("_", _BAD_LABEL_CHARS.sub("_", str(key))) or "tag"
    if str(key).startswith("__"):
        return "tag_" + text.lstrip("_")
    if text[0].isdigit():
        text = "_" + text
    if text in RESERVED_LABELS:
        return "tag_" + text
    return text


def labels_of(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags as Prometheus labels (rule 5), without the exporter's own labels."""
    out: dict[str, str] = {}
    for key in sorted(tags):
        out.setdefault(label_name(key), str(tags[key]))
    return out


def escape_label_value(value: str) -> str:
    """Rule 6: a label value for the text formats."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text for the text formats (backslash and line feed escaped)."""
    return str(text).replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as both text formats write it (``+Inf``, ``-Inf``, ``NaN``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True, slots=True)
class Family:
    """The Prometheus names of one holter metric (name, kind, unit)."""

    name: str
    """The family name: for a counter without ``_total`` (OpenMetrics' TYPE line)."""
    kind: str
    """``counter``, ``gauge`` or ``summary``/``histogram`` for holter histograms."""
    unit_word: str
    """The spelled-out unit, when the name ends with it (OpenMetrics' UNIT line)."""

    def samples(self) -> tuple[str, ...]:
        """Every sample name this family writes."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "gauge":
            return (self.name,)
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name, f"{self.name}_sum", f"{self.name}_count")


class NameMapper:
    """Maps holter metrics to Prometheus families, resolving collisions (rule 4).

    The mapping depends only on the set of metrics given, not on their order.
    """

    def __init__(self, histograms: str = "summary") -> None:
        if histograms not in ("summary", "histogram"):
            raise ValueError(
                f"bad histogram mode {histograms!r}: use 'summary' or 'histogram'"
            )
        self.histograms = histograms
        self._known: set[tuple[str, str, str]] = set()
        self._families: dict[tuple[str, str, str], Family] = {}

    def family(self, name: str, kind: str, unit: str | None) -> Family:
        """The family of one holter metric (adding it to the set if it is new)."""
        key = (name, kind, unit or "")
        found = self._families.get(key)
        if found is None:
            self.update([key])
            found = self._families[key]
        return found

    def update(self, metrics: Iterable[tuple[str, str, str]]) -> None:
        """Add metrics ``(name, kind, unit)``; recompute the mapping if any is new."""
        new = {(n, k, u or "") for n, k, u in metrics} - self._known
        if not new:
            return
        self._known |= new
        used: set[str] = set()
        families: dict[tuple[str, str, str], Family] = {}
        for key in sorted(self._known):
            name, kind, unit = key
            base = base_name(name, unit, kind)
            prom_kind = self.histograms if kind == "histogram" else kind
            if prom_kind not in ("counter", "gauge", "summary", "histogram"):
                prom_kind = "gauge"
            word = unit_suffix(unit)
            fam = Family(base, prom_kind, word if word and base.endswith(word) else "")
            if used & set(fam.samples()) or fam.name in used:
                digest = hashlib.sha1("|".join(key).encode()).hexdigest()[:8]
                fam = Family(f"{base}_{digest}", prom_kind, "")
            used.update(fam.samples())
            used.add(fam.name)
            families[key] = fam
        self._families = families
