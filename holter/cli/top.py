"""``holter top``: the live terminal dashboard on a store (see :mod:`holter.dashboard`)."""

from __future__ import annotations

import click

from holter.cli._options import CliError, db_option, holter_errors
from holter.config import parse_seconds
from holter.errors import ConfigError, HolterError
from holter.store import query as q

MIN_REFRESH_S = 0.1


def refresh_seconds(value: str) -> float:
    """``--refresh`` in seconds (``1s``, ``500ms``, ``2``); CliError when it is not one."""
    try:
        seconds = parse_seconds(value, "--refresh")
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if seconds < MIN_REFRESH_S:
        raise CliError(f"--refresh must be at least {MIN_REFRESH_S} s, got {value!r}")
    return seconds


def check_window(window: str) -> str:
    """A window the dashboard can show (1m, 5m, 15m, 1h or any duration)."""
    try:
        q.parse_window(window)
    except HolterError as exc:
        raise CliError(str(exc)) from None
    return window


@click.command("top")
@click.option("--run", "run", type=int, default=None,
              help="Watch this run (and the runs it started).")
@click.option("--app", "app", default=None, help="Watch the runs of this app.")
@click.option("--refresh", default="1s", show_default=True,
              help="Refresh period: 1s, 500ms, 2s ...")
@click.option("--window", "-w", default="5m", show_default=True,
              help="Initial time window (w switches between 1m, 5m, 15m and 1h).")
@db_option
@holter_errors
def top_cmd(run: int | None, app: str | None, refresh: str, window: str, db: str) -> None:
    """Live terminal dashboard: system, top series, operations, slowest traces, alerts.

    Watches the store while programs write it (from this terminal or another one).
    Keys: q quit, / filter, s sort, p pause, Tab panels, Enter drill down (a trace's
    waterfall with its critical path), Esc back, w window, ? help. A store that does not
    exist yet is waited for.
    """
    if run is not None and app is not None:
        raise CliError("give --run or --app, not both")
    from holter.dashboard import run as run_dashboard

    run_dashboard(db, window=check_window(window), refresh_s=refresh_seconds(refresh),
                  run=run, app=app)
