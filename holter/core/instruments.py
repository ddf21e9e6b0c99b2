"""Counter, Gauge, Histogram and timers: the instruments users hold.

``counter.inc(amount, **tags)`` finds the series for ``tags`` through a dictionary
keyed by the tags exactly as passed (``tuple(tags.items())``): no sorting and no
string building on the hot path. The first time a tag set is seen it is validated,
converted to strings and sorted once (the canonical series), and the exact form
is remembered as an alias. ``bind(**tags)`` does that once and returns the series'
cell, whose methods are the cheapest way to record in a hot loop.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

from holter.core._cells import BUFFER_CAP, CounterCell, GaugeCell, HistogramCell
from holter.core.registry import OVERFLOW_TAGS, Tags, canonical_tags, tag_value
from holter.errors import ConfigError

if TYPE_CHECKING:
    from holter.core.registry import Registry

P = ParamSpec("P")
R = TypeVar("R")

TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
"""Units a timer can record in, with their factor from seconds."""

_MAX_ALIASES_PER_SERIES = 4
_PLAIN = frozenset((str, int, float, bool))
_perf_counter = time.perf_counter


class Instrument:
    """Common machinery: series lookup, cardinality cap, fork reset."""

    kind: ClassVar[str] = ""
    __slots__ = (
        "_aliases",
        "_default",
        "_fast",
        "_registry",
        "_series",
        "description",
        "name",
        "unit",
        "unlimited",
    )

    def __init__(self, registry: Registry, name: str, unit: str | None, description: str) -> None:
        self._registry = registry
        self.name = name
        self.unit = unit
        self.description = description
        self._series: dict[Tags, Any] = {}
        self._aliases: dict[tuple[tuple[str, object], ...], Any] = {}
        # alias -> the one function a hot call needs (a counter's +1, a histogram's observe)
        self._fast: dict[tuple[tuple[str, object], ...], Any] = {}
        self._default: Any = None
        self.unlimited = False  # the registry's own instruments set it

    def _resolve(self, tags: Mapping[str, object]) -> Any:
        """Slow path: find or create the cell of ``tags`` and remember the alias."""
        canon = canonical_tags(tags)
        cell = self._series.get(canon)
        registry = self._registry
        if cell is None:
            with registry.lock:
                cell = self._series.get(canon)
                if cell is None:
                    if len(self._series) >= registry.max_series and not self.unlimited:
                        cell = self._overflow_cell()
                        registry.overflowed(self.name)
                        return cell  # not aliased: memory stays bounded
                    cell = registry.new_cell(self.kind, canon, self.name)
                    self._series[canon] = cell
        # Only plain values are cached as aliases: values that are equal but print
        # differently (the tuples (1,) and (1.0,)) must not depend on which came first.
        if len(self._aliases) < _MAX_ALIASES_PER_SERIES * max(len(self._series), 1) and all(
            v.__class__ in _PLAIN for v in tags.values()
        ):
            alias = tuple(tags.items())
            self._aliases[alias] = cell
            fast = getattr(cell, "tick", None) or getattr(cell, "observe", None)
            if fast is not None:
                self._fast[alias] = fast
        return cell

    def _overflow_cell(self) -> Any:
        cell = self._series.get(OVERFLOW_TAGS)
        if cell is None:
            cell = self._registry.new_cell(self.kind, OVERFLOW_TAGS, self.name)
            self._series[OVERFLOW_TAGS] = cell
        return cell

    def _cell(self, tags: Mapping[str, object]) -> Any:
        if not tags:
            cell = self._default
            if cell is None:
                cell = self._default = self._resolve({})
            return cell
        try:
            cell = self._aliases.get(tuple(tags.items()))
        except TypeError:
            cell = None
        return cell if cell is not None else self._resolve(tags)

    def series(self) -> list[Any]:
        """The cells of this instrument (one per tag combination)."""
        return list(self._series.values())

    def reset_after_fork(self) -> None:
        """Clear interval data inherited from the parent process."""
        for cell in list(self._series.values()):
            cell.reset_after_fork()

    def __repr__(self) -> str:
        unit = f", unit={self.unit!r}" if self.unit else ""
        return f"{type(self).__name__}({self.name!r}{unit}, series={len(self._series)})"


class Counter(Instrument):
    """A monotonic count: ``inc(amount=1, **tags)``; rates are computed at query time."""

    kind = "counter"
    __slots__ = ()

    def inc(self, amount: float = 1, /, **tags: object) -> None:
        """Add ``amount`` (finite, not negative) to the series of ``tags``."""
        if tags:
            try:  # the common case: +1 on a known tag set, one dict lookup and one C call
                if amount == 1:
                    self._fast[tuple(tags.items())]()
                    return
            except Exception:  # unknown tag set, unhashable value, odd amount: the full path
                pass
            try:
                cell = self._aliases.get(tuple(tags.items())) or self._resolve(tags)
            except TypeError:
                cell = self._resolve(tags)
        else:
            cell = self._default or self._cell(tags)
        cell.inc(amount)

    def bind(self, **tags: object) -> CounterCell:
        """Resolve ``tags`` once; the returned series has ``inc(amount=1)``."""
        return self._cell(tags)


class Gauge(Instrument):
    """A value that goes up and down, or is sampled from a callback at each flush."""

    kind = "gauge"
    __slots__ = ("callbacks",)

    def __init__(self, registry: Registry, name: str, unit: str | None, description: str) -> None:
        super().__init__(registry, name, unit, description)
        self.callbacks: dict[Tags, Callable[[], float]] = {}

    def set(self, value: float, /, **tags: object) -> None:
        """Set the series of ``tags`` to ``value``."""
        self._cell(tags).set(value)

    def inc(self, amount: float = 1, /, **tags: object) -> None:
        """Add ``amount`` to the series of ``tags``."""
        self._cell(tags).inc(amount)

    def dec(self, amount: float = 1, /, **tags: object) -> None:
        """Subtract ``amount`` from the series of ``tags``."""
        self._cell(tags).dec(amount)

    def bind(self, **tags: object) -> GaugeCell:
        """Resolve ``tags`` once; the returned series has ``set``, ``inc``, ``dec``."""
        return self._cell(tags)

    def set_function(self, fn: Callable[[], float], **tags: object) -> None:
        """Sample ``fn()`` at each flush (in the collector) as the series of ``tags``."""
        if not callable(fn):
            raise ConfigError(f"gauge {self.name!r}: fn must be callable, got {fn!r}")
        cell = self._cell(tags)
        self.callbacks[cell.tags] = fn

    def sample_callbacks(self) -> None:
        """Call every callback and set its series; failures are counted, never raised."""
        registry = self._registry
        for tags, fn in list(self.callbacks.items()):
            try:
                value = fn()
            except Exception as exc:
                registry.count_drop("callback_error", 1, f"{self.name}: {exc!r}")
                continue
            cell = self._series.get(tags)
            if cell is None:
                continue
            try:
                cell.set(value)
            except Exception:  # strict mode raises for a bad value; the collector must not
                registry.count_drop(_bad_reason(value), 1, value)


def _bad_reason(value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return "not_finite"
    except Exception:
        return "not_a_number"
    return "not_finite" if number - number != 0.0 else "not_a_number"


class Histogram(Instrument):
    """A distribution of values: count, sum, min, max, mean, stddev and percentiles."""

    kind = "histogram"
    __slots__ = ("_factor",)

    def __init__(self, registry: Registry, name: str, unit: str | None, description: str) -> None:
        super().__init__(registry, name, unit, description)
        self._factor = TIME_UNITS.get(unit or "s")  # None: not a unit of time

    def observe(self, value: float, /, **tags: object) -> None:
        """Record ``value`` (a finite number) in the series of ``tags``."""
        if tags:
            try:
                observe = self._fast[tuple(tags.items())]
            except (KeyError, TypeError):  # unknown tag set or unhashable value
                observe = self._resolve(tags).observe
            observe(value)
            return
        cell = self._default or self._cell(tags)
        cell.observe(value)

    def bind(self, **tags: object) -> HistogramCell:
        """Resolve ``tags`` once; the returned series has ``observe(value)``."""
        return self._cell(tags)

    def time(self, **tags: object) -> Timer:
        """A context manager that observes the time spent inside it, in this metric's unit."""
        factor = self._factor
        if factor == 1.0 and not tags and self._default is not None:
            return Timer(self._default)
        if factor is None:
            raise _not_a_time(self)
        if tags:
            try:
                cell = self._aliases.get(tuple(tags.items())) or self._resolve(tags)
            except TypeError:
                cell = self._resolve(tags)
        else:
            cell = self._default or self._cell(tags)
        if factor == 1.0:
            return Timer(cell)
        return ScaledTimer(cell, factor)

    def timed(self, **tags: object) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a sync or async function to observe its duration."""
        if self._factor is None:
            raise _not_a_time(self)
        return timed_decorator(self._cell(tags).observe, self._factor)


def _not_a_time(histogram: Histogram) -> ConfigError:
    return ConfigError(
        f"metric {histogram.name!r} has unit {histogram.unit!r}; a timer records time in one "
        f"of {sorted(TIME_UNITS)}"
    )


class Timer:
    """Context manager observing the seconds spent inside it; ``elapsed`` holds them after exit.

    One is made per use (``with h.time(): ...``), so timers nest and cross threads and
    tasks freely. The elapsed time goes straight into the series' buffer (it is always a
    finite float, so the checks of ``observe`` are not needed).
    """

    __slots__ = ("_cell", "_start", "elapsed")

    def __init__(self, cell: HistogramCell) -> None:
        self._cell = cell

    def __enter__(self, _clock: Callable[[], float] = _perf_counter) -> Timer:
        self._start = _clock()
        return self

    def __exit__(
        self, exc_type: object, exc: object, tb: object,
        _clock: Callable[[], float] = _perf_counter, _cap: int = BUFFER_CAP,
    ) -> None:
        elapsed = self.elapsed = _clock() - self._start
        cell = self._cell
        buf = cell._buf
        buf.append(elapsed)
        if len(buf) >= _cap:
            cell._buffer_full()

    def __getattr__(self, name: str) -> Any:
        if name == "elapsed":  # read before the timer ended
            return None
        raise AttributeError(name)

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)


class ScaledTimer(Timer):
    """A :class:`Timer` recording in ms, µs or ns (``elapsed`` stays in seconds)."""

    __slots__ = ("_factor",)

    def __init__(self, cell: HistogramCell, factor: float) -> None:
        self._cell = cell
        self._factor = factor

    def __exit__(
        self, exc_type: object, exc: object, tb: object,
        _clock: Callable[[], float] = _perf_counter, _cap: int = BUFFER_CAP,
    ) -> None:
        elapsed = self.elapsed = _clock() - self._start
        cell = self._cell
        buf = cell._buf
        buf.append(elapsed * self._factor)
        if len(buf) >= _cap:
            cell._buffer_full()


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """``inspect.iscoroutinefunction`` without importing inspect (~10 ms at start-up)."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    target = getattr(target, "__func__", target)
    code = getattr(target, "__code__", None)
    return bool(code is not None and code.co_flags & 0x80)  # CO_COROUTINE


def timed_decorator(
    observe: Callable[[float], None], factor: float = 1.0
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Build a decorator that observes each call's duration (sync or async functions)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if _is_coroutine_function(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                start = _perf_counter()
                try:
                    return await fn(*args, **kwargs)  # type: ignore[misc]
                finally:
                    observe((_perf_counter() - start) * factor)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = _perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                observe((_perf_counter() - start) * factor)

        return wrapper

    return decorate


__all__ = [
    "TIME_UNITS",
    "Counter",
    "Gauge",
    "Histogram",
    "Instrument",
    "ScaledTimer",
    "Timer",
    "tag_value",
    "timed_decorator",
]
