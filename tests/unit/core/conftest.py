"""Fixtures for the hot-path tests."""

from __future__ import annotations

import pytest

import holter.testing
from holter.config import Config
from holter.monitor import Monitor


@pytest.fixture
def mon():
    """A strict monitor with no background thread on a private temporary store."""
    with holter.testing.monitor() as m:
        yield m


@pytest.fixture
def definer():
    """A strict monitor that writes nothing (no store): for definition-time checks."""
    m = Monitor(Config(app="test", strict=True, disabled=True), start=False)
    yield m
    m.stop()
