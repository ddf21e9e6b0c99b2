"""The registry: get-or-create instruments, resolve tag sets, cap cardinality, count drops.

Creating an instrument or a new tag combination takes the registry lock once;
recording into an existing series never does (STYLE habit 3: check, lock, check
again). A metric holds at most ``max_series`` tag combinations; later ones record
into one overflow series tagged ``holter.overflow=true`` and are counted in
``holter.overflow{metric=...}``.
"""

from __future__ import annotations

import enum
import logging
import numbers
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from holter.core._cells import CounterCell, GaugeCell, HistogramCell
from holter.errors import ConfigError, InvalidValue

if TYPE_CHECKING:
    from holter.core.instruments import Instrument

logger = logging.getLogger("holter")

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_./-]{0,254}$"
"""Metric names: a letter, then letters, digits, ``_ . / -``; at most 255 characters."""

TAG_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$"
"""Tag keys: a letter or ``_``, then letters, digits, ``_ .``; at most 128 characters."""

UNIT_PATTERN = r"^[\x21-\x7e]{1,63}$"
"""Units: 1 to 63 printable ASCII characters without spaces (``ms``, ``s``, ``By``, ``{req}``)."""

MAX_TAG_VALUE_LEN = 200
"""Tag values longer than this are cut to this many characters."""

OVERFLOW_TAGS: tuple[tuple[str, str], ...] = (("holter.overflow", "true"),)
KINDS = ("counter", "gauge", "histogram")

_name_ok = re.compile(NAME_PATTERN).fullmatch
_key_ok = re.compile(TAG_KEY_PATTERN).fullmatch
_unit_ok = re.compile(UNIT_PATTERN).fullmatch

Tags = tuple[tuple[str, str], ...]


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid metric name, else raise ConfigError (a ValueError)."""
    if not isinstance(name, str) or not _name_ok(name):
        raise ConfigError(
            f"invalid metric name {name!r}: names must match {NAME_PATTERN} "
            "(start with a letter; then letters, digits, '_', '.', '/' or '-'; "
            "255 characters at most)"
        )
    return name


def check_unit(unit: object) -> str | None:
    """Return ``unit`` if valid (or None), else raise ConfigError."""
    if unit is None:
        return None
    if not isinstance(unit, str) or not _unit_ok(unit):
        raise ConfigError(
            f"invalid unit {unit!r}: units are 1 to 63 printable ASCII characters without "
            "spaces, such as 's', 'ms', 'By' or '{request}'"
        )
    return unit


def tag_value(value: object) -> str:
    """Convert a tag value to its stored string, deterministically.

    ``str`` as is. Numbers by value, so that values Python treats as the same
    dictionary key (``1``, ``1.0``, ``True``) always give the same string: whole
    numbers as decimal integers (``True`` → ``"1"``), others with ``repr(float)``.
    ``bytes`` decoded as UTF-8 (bad bytes replaced); an ``Enum`` as its value;
    anything else with ``str()``. The result is cut to :data:`MAX_TAG_VALUE_LEN`.
    """
    cls = value.__class__
    if cls is str:
        text: str = value  # type: ignore[assignment]
    elif cls is int:
        text = str(value)
    elif isinstance(value, enum.Enum):
        return tag_value(value.value)
    elif isinstance(value, numbers.Number) and not isinstance(value, complex):
        text = _number_text(value)
    elif isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "replace")
    else:
        try:
            text = str(value)
        except Exception:
            text = f"<unprintable {cls.__name__}>"
    if len(text) > MAX_TAG_VALUE_LEN:
        text = text[:MAX_TAG_VALUE_LEN]
    return text


def _number_text(value: object) -> str:
    try:
        as_float = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return str(value)
    if as_float.is_integer():
        try:
            return str(int(value))  # type: ignore[call-overload]
        except (TypeError, ValueError, OverflowError):
            return str(int(as_float))
    return repr(as_float)


def canonical_tags(tags: Mapping[str, object]) -> Tags:
    """Validate keys and return the tags as a sorted tuple of ``(key, str_value)``."""
    out = []
    for key, value in tags.items():
        if not isinstance(key, str) or not _key_ok(key):
            raise ConfigError(
                f"invalid tag key {key!r}: tag keys must match {TAG_KEY_PATTERN} "
                "(start with a letter or '_'; then letters, digits, '_' or '.')"
            )
        out.append((key, tag_value(value)))
    out.sort()
    return tuple(out)


class Registry:
    """Instruments of one monitor, their series, and drop accounting."""

    def __init__(self, *, strict: bool = False, max_series: int = 2000) -> None:
        self.strict = strict
        self.max_series = max_series
        self.instruments: dict[str, Instrument] = {}
        self.lock = threading.RLock()
        self._logged: set[str] = set()
        self._fold_requests: list[HistogramCell] = []
        self.wake: Callable[[], None] | None = None
        from holter.core.instruments import Counter

        self._dropped = Counter(self, "holter.dropped", None, "Recorded values dropped, by reason.")
        self._overflow = Counter(
            self, "holter.overflow", None, "Recordings sent to a metric's overflow series."
        )
        self._dropped.unlimited = self._overflow.unlimited = True
        self.instruments[self._dropped.name] = self._dropped
        self.instruments[self._overflow.name] = self._overflow

    # -- instruments -------------------------------------------------------------------

    def define(
        self, cls: type[Instrument], name: str, unit: str | None, description: str
    ) -> Instrument:
        """Return the instrument ``name``, creating it; ConfigError on a kind or unit conflict."""
        existing = self.instruments.get(name)
        if existing is None:
            check_name(name)
            check_unit(unit)
            with self.lock:
                existing = self.instruments.get(name)
                if existing is None:
                    created = cls(self, name, unit, description)
                    self.instruments[name] = created
                    return created
        if existing.kind != cls.kind:
            raise ConfigError(
                f"metric {name!r} is already a {existing.kind}; it cannot also be a {cls.kind}. "
                "Use another name for the new metric."
            )
        if unit is not None and existing.unit != unit:
            raise ConfigError(
                f"metric {name!r} was defined with unit {existing.unit!r}; it cannot also have "
                f"unit {unit!r}. Use one unit per metric."
            )
        return existing

    def new_cell(
        self, kind: str, tags: Tags, metric: str = ""
    ) -> CounterCell | GaugeCell | HistogramCell:
        """Create the value cell of one series of ``metric``."""
        drop = self.drop

        def on_bad(value: object, reason: str, count: int = 1) -> None:
            drop(value, reason, count, metric)

        if kind == "counter":
            return CounterCell(tags, on_bad)
        if kind == "gauge":
            return GaugeCell(tags, on_bad)
        return HistogramCell(tags, on_bad, strict=self.strict, on_full=self.request_fold)

    def request_fold(self, cell: HistogramCell) -> None:
        """A histogram buffer filled up: queue it for the collector and wake it."""
        self._fold_requests.append(cell)
        wake = self.wake
        if wake is not None:
            wake()

    def take_fold_requests(self) -> list[HistogramCell]:
        """The cells waiting for the collector to fold them (the queue is emptied)."""
        requests = self._fold_requests
        n = len(requests)
        taken = requests[:n]
        del requests[:n]
        return taken

    def overflowed(self, metric: str) -> None:
        """Count a recording sent to ``metric``'s overflow series (logged once per metric)."""
        self._overflow.inc(1, metric=metric)
        self._log_once(
            f"overflow:{metric}",
            "metric %r reached its limit of %d tag combinations; new combinations are recorded "
            "in the series tagged holter.overflow=true (raise max_series, or drop a tag with "
            "many values such as an id)",
            metric,
            self.max_series,
        )

    # -- drops -------------------------------------------------------------------------

    def drop(self, value: object, reason: str, count: int = 1, metric: str = "") -> None:
        """Count ``count`` dropped values; raise InvalidValue instead in strict mode."""
        if self.strict:
            where = f" for metric {metric!r}" if metric else ""
            raise InvalidValue(
                f"bad value {value!r}{where} ({reason.replace('_', ' ')}): record finite "
                "numbers, and never a negative amount on a counter. Strict mode raised this "
                "(HOLTER_STRICT=1 or start(strict=True)); without it the value is dropped and "
                "counted in holter.dropped{reason=...}."
            )
        self.count_drop(reason, count, value)

    def count_drop(self, reason: str, count: int = 1, value: object = None) -> None:
        """Count drops without raising (for faults outside the program's calls)."""
        try:
            self._dropped.inc(count, reason=reason)
        except Exception:  # pragma: no cover - counting must never fail the caller
            return
        self._log_once(
            f"drop:{reason}",
            "holter dropped a value (%s, e.g. %r); such drops are counted in "
            "holter.dropped{reason=%s} and logged once",
            reason,
            value,
            reason,
        )

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key in self._logged:
            return
        self._logged.add(key)
        logger.warning(msg, *args)

    # -- the collector's view ------------------------------------------------------------

    def snapshot(self) -> list[Instrument]:
        """The instruments, as a list safe to iterate while the program records.

        holter's own ``holter.*`` instruments come last, so drops found while the others
        are collected (NaN in a histogram, a failing callback) go out in the same flush.
        """
        with self.lock:
            items = list(self.instruments.values())
        return sorted(items, key=lambda i: i.name.startswith("holter."))

    def reset_after_fork(self) -> None:
        """Give the child fresh locks and empty interval data."""
        self.lock = threading.RLock()
        for instrument in list(self.instruments.values()):
            instrument.reset_after_fork()
