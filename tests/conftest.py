"""Test-wide setup: holter's own suite runs in strict mode (bad values raise)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HOLTER_STRICT"] = "1"
os.environ.pop("HOLTER_DB", None)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A fresh store path in a temporary directory."""
    return str(tmp_path / "holter.db")


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (for subprocesses)."""
    return sys.executable


@pytest.fixture
def mon(db_path: str):
    """A strict monitor with no background thread on a fresh store."""
    import holter.testing

    with holter.testing.monitor(db=db_path) as m:
        yield m
