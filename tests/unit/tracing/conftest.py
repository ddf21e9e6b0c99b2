"""Tracing unit tests: every test starts and ends with no current span in the main thread."""

from __future__ import annotations

import pytest

from holter.core import tracing


@pytest.fixture(autouse=True)
def _no_current_span():
    """A test that leaves a span current (a bug, or a test of one) must not leak it."""
    tracing._current.set(None)
    yield
    tracing._current.set(None)
