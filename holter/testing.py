"""Helpers for testing code that uses holter (and for holter's own tests).

* :func:`monitor` — a strict monitor on a private store with no background thread;
  call ``mon.flush()`` to write, then query.
* :class:`FakeClock` — move holter's wall clock and monotonic clock by hand.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from holter import _clock
from holter.config import Config
from holter.monitor import Monitor


@contextlib.contextmanager
def monitor(
    *, db: str | os.PathLike[str] | None = None, strict: bool = True, **settings: Any
) -> Iterator[Monitor]:
    """A monitor for a test: strict by default, on a temporary store, flushed by hand.

    The store is deleted afterwards unless ``db`` was given.
    """
    with contextlib.ExitStack() as stack:
        if db is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="holter-test-"))
            db = os.path.join(folder, "test.db")
        config = Config.resolve(app=settings.pop("app", "test"), db=db, strict=strict, **settings)
        mon = Monitor(config, start=False)
        try:
            yield mon
        finally:
            mon.stop()


class FakeClock:
    """Replace holter's clocks; use as a context manager. Times are nanoseconds.

    >>> with FakeClock(start_ns=1_700_000_000 * 10**9) as clock:
    ...     clock.advance(10.0)   # seconds
    """

    def __init__(self, start_ns: int | None = None) -> None:
        self.now_ns = start_ns if start_ns is not None else _clock.time_ns()
        self.mono_ns = 0
        self._saved: tuple[Any, Any] | None = None

    def time_ns(self) -> int:
        """The fake wall clock."""
        return self.now_ns

    def monotonic_ns(self) -> int:
        """The fake monotonic clock."""
        return self.mono_ns

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        step = int(seconds * 1e9)
        self.now_ns += step
        self.mono_ns += step

    def __enter__(self) -> FakeClock:
        self._saved = (_clock.time_ns, _clock.monotonic_ns)
        _clock.time_ns = self.time_ns  # type: ignore[assignment]
        _clock.monotonic_ns = self.monotonic_ns  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            _clock.time_ns, _clock.monotonic_ns = self._saved  # type: ignore[assignment]
            self._saved = None


__all__ = ["FakeClock", "monitor"]
