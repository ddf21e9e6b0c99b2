"""``holter top`` driven headless through Textual's Pilot: keys, filtering, sorting,
drill-down, layouts, an empty store and one that does not exist yet."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from click.testing import CliRunner
from dashboard_support import (
    bump_schema,
    record_workload,
    recorder,
    screen_text,
    write_trace,
)

pytest.importorskip("textual")

from holter.cli.main import cli
from holter.dashboard.app import SeriesScreen, TopApp, TraceScreen
from holter.dashboard.model import LiveModel
from holter.dashboard.widgets import RowTable
from holter.store.schema import SCHEMA_VERSION
from holter.store.sqlite import Store

Scenario = Callable[[TopApp, Any], Awaitable[None]]


async def until(pilot: Any, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``check()`` holds (AssertionError after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("the screen never got there:\n" + screen_text(pilot.app))
        await pilot.pause(0.05)


def drive(db: str, scenario: Scenario, *, size: tuple[int, int] = (80, 24),
          window: str = "1h") -> TopApp:
    async def main() -> TopApp:
        app = TopApp(LiveModel(db, window=window), refresh_s=0.2)
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.refreshes > 0
                        and screen_text(app).splitlines()[-1].strip() != "")
            await pilot.pause(0.1)
            await scenario(app, pilot)
        return app

    return asyncio.run(main())


def table_keys(app: TopApp, panel: str) -> list[str]:
    return list(app.query_one(f"#t-{panel}", RowTable).order)


def table_line(app: TopApp, panel: str, label: str) -> str:
    """The text of the row whose first cell is ``label``."""
    table = app.query_one(f"#t-{panel}", RowTable)
    rows = app.snapshot.panels[panel].rows
    return next(table.lines[k] for k in table.order if rows[k][0] == label)


def table_labels(app: TopApp, panel: str) -> list[str]:
    rows = app.snapshot.panels[panel].rows if app.snapshot and app.snapshot.panels[panel] else {}
    return [rows[k][0] for k in table_keys(app, panel) if k in rows]


def test_q_quits_cleanly(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon)

        async def scenario(app: TopApp, pilot: Any) -> None:
            assert "jobs.done" in screen_text(app)
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None)

        app = drive(db_path, scenario)
    assert app.return_code == 0


def test_ctrl_c_quits_cleanly(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon)

        async def scenario(app: TopApp, pilot: Any) -> None:
            await pilot.press("ctrl+c")
            await until(pilot, lambda: app.return_code is not None)

        app = drive(db_path, scenario)
    assert app.return_code == 0


def test_footer_shows_one_key_per_action_in_80_columns(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon)

        async def scenario(app: TopApp, pilot: Any) -> None:
            footer = screen_text(app).splitlines()[-1]
            for key, what in [("q", "Quit"), ("/", "Filter"), ("s", "Sort"), ("p", "Pause"),
                              ("⇥", "Panel"), ("⏎", "Open"), ("esc", "Back"),
                              ("w", "Window"), ("?", "Help")]:
                assert f"{key} {what}" in footer, footer
            await pilot.press("question_mark")
            await until(pilot, lambda: "holter top — keys" in screen_text(app))
            await pilot.press("escape")
            await until(pilot, lambda: "holter top — keys" not in screen_text(app))

        drive(db_path, scenario)


def test_typing_a_filter_narrows_the_rows_and_esc_clears_it(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon)

        async def scenario(app: TopApp, pilot: Any) -> None:
            everything = table_labels(app, "series")
            assert "jobs.done" in everything and len(everything) > 3
            await pilot.press("slash", "l", "a", "t")
            await until(pilot, lambda: all("lat" in x for x in table_labels(app, "series")))
            assert sorted(table_labels(app, "series")) == [
                "http.latency{route=/orders}", "http.latency{route=/users}"]
            assert "filter 'lat'" in screen_text(app)
            await pilot.press("enter")  # keeps the filter, back to the table
            assert len(table_labels(app, "series")) == 2
            await pilot.press("escape")
            await until(pilot, lambda: len(table_labels(app, "series")) == len(everything))

        drive(db_path, scenario)


def test_s_sorts_once_and_rows_then_stay_in_place(db_path: str) -> None:
    with recorder(db_path) as mon:
        mon.counter("busy").inc(100)
        mon.counter("quiet").inc(1)
        mon.flush()

        async def scenario(app: TopApp, pilot: Any) -> None:
            mine = lambda: [x for x in table_labels(app, "series")  # noqa: E731
                            if not x.startswith("holter.")]
            assert mine() == ["busy", "quiet"]
            assert "sorted by rate" in screen_text(app)
            mon.counter("quiet").inc(10_000)
            mon.flush()
            before = app.refreshes
            await until(pilot, lambda: app.refreshes >= before + 2)
            assert mine() == ["busy", "quiet"]  # no jumping: quiet is busier, yet stays put
            assert table_line(app, "series", "quiet").split()[1] == "10k"  # its cells did update
            await pilot.press("s")  # sort by value (the count), once
            await until(pilot, lambda: mine() == ["quiet", "busy"])
            assert "sorted by value" in screen_text(app)

        drive(db_path, scenario)


def test_tab_moves_between_panels_and_enter_opens_a_trace_waterfall(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon)
        trace_id = write_trace(mon)

        async def scenario(app: TopApp, pilot: Any) -> None:
            assert app.active == "series"
            await pilot.press("tab")
            assert app.active == "ops"
            await pilot.press("tab")
            assert app.active == "traces"
            await until(pilot, lambda: trace_id in table_keys(app, "traces"))
            assert table_keys(app, "traces")[0] == trace_id  # the slowest first
            assert "slow_request" in screen_text(app)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TraceScreen)
                        and app.screen.spans is not None)
            text = screen_text(app)
            assert f"trace {trace_id}" in text
            assert "● slow_request" in text
            assert "●   fetch_slow" in text  # on the critical path
            assert "    fetch_fast" in text and "●   fetch_fast" not in text  # parallel: off it
            assert "critical path: slow_request" in text and "→ fetch_slow" in text
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, TraceScreen))
            assert app.active == "traces"
            await pilot.press("tab", "tab")  # past runs (alerts/anomalies absent) to series
            assert app.active == "series"

        drive(db_path, scenario)


def test_enter_on_a_series_shows_all_its_statistics(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon)

        async def scenario(app: TopApp, pilot: Any) -> None:
            await pilot.press("slash", *"users", "enter")
            await until(pilot, lambda: table_labels(app, "series")
                        == ["http.latency{route=/users}"])
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, SeriesScreen))
            await until(pilot, lambda: "p99.9" in screen_text(app))
            text = screen_text(app)
            assert "http.latency{route=/users}  (histogram, ms) over the last 1h" in text
            for stat in ("count", "rate/s", "min", "mean", "p50", "p95", "p99", "max"):
                assert stat in text
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, SeriesScreen))

        drive(db_path, scenario)


def test_p_pauses_and_w_switches_the_window(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon, jobs=10)

        def jobs(app: TopApp) -> str:
            return table_line(app, "series", "jobs.done").split()[1]

        async def scenario(app: TopApp, pilot: Any) -> None:
            assert jobs(app) == "10"
            await pilot.press("p")
            await until(pilot, lambda: "PAUSED" in screen_text(app))
            seen = app.refreshes
            mon.counter("jobs.done").inc(5)
            mon.flush()
            await pilot.pause(0.6)
            assert app.refreshes == seen and jobs(app) == "10"  # frozen
            await pilot.press("p")
            await until(pilot, lambda: jobs(app) == "15")
            assert "PAUSED" not in screen_text(app)
            assert "window 1h" in screen_text(app)
            await pilot.press("w")
            await until(pilot, lambda: "window 1m" in screen_text(app))
            await until(pilot, lambda: jobs(app) == "15")  # written just now: inside 1m too
            await pilot.press("3")
            await until(pilot, lambda: "window 15m" in screen_text(app))

        drive(db_path, scenario)


def test_empty_store(db_path: str) -> None:
    Store.open(db_path).close()

    async def scenario(app: TopApp, pilot: Any) -> None:
        text = screen_text(app)
        assert "no series recorded in this window yet" in text
        assert "no runtime metrics in this window" in text

    drive(db_path, scenario)


def test_a_store_that_does_not_exist_yet_is_waited_for(db_path: str) -> None:
    async def scenario(app: TopApp, pilot: Any) -> None:
        assert f"waiting for {db_path}: no store there yet" in " ".join(screen_text(app).split())
        with recorder(db_path) as mon:
            mon.counter("arrived").inc(3)
            mon.flush()
            await until(pilot, lambda: "arrived" in screen_text(app))
            assert "waiting for" not in screen_text(app)

    drive(db_path, scenario)


def test_layouts_80x24_one_panel_and_large_terminals_all(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon)
        write_trace(mon)

        async def small(app: TopApp, pilot: Any) -> None:
            lines = screen_text(app).splitlines()
            assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
            assert sum("╭─ top series" in line for line in lines) == 1
            assert not any("╭─ operations" in line for line in lines)
            assert any("top series" in line and "operations" in line and "slowest traces"
                       in line for line in lines)  # the panel tabs

        async def large(app: TopApp, pilot: Any) -> None:
            await until(pilot, lambda: "╭─ slowest traces" in screen_text(app))
            text = screen_text(app)
            for title in ("╭─ top series", "╭─ operations", "╭─ slowest traces", "╭─ runs"):
                assert title in text
            assert "╭─ alerts" not in text  # nothing to show: no panel

        drive(db_path, small, size=(80, 24))
        drive(db_path, large, size=(160, 48))


def test_no_color_is_honoured(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    with recorder(db_path) as mon:
        record_workload(mon)

        async def scenario(app: TopApp, pilot: Any) -> None:
            assert app.no_color
            assert "jobs.done" in screen_text(app)

        drive(db_path, scenario)


def test_holter_top_refuses_a_newer_store_in_one_line(db_path: str) -> None:
    Store.open(db_path).close()
    bump_schema(db_path, SCHEMA_VERSION + 1)
    result = CliRunner().invoke(cli, ["top", "--db", db_path])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert f"version {SCHEMA_VERSION + 1}" in lines[0]
    assert f"version {SCHEMA_VERSION}" in lines[0]


def test_holter_top_option_errors(db_path: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["top", "--db", db_path, "--run", "1", "--app", "x"])
    assert result.exit_code == 2 and "--run or --app" in result.output
    result = runner.invoke(cli, ["top", "--db", db_path, "--refresh", "soon"])
    assert result.exit_code == 2 and "--refresh" in result.output
    result = runner.invoke(cli, ["top", "--db", db_path, "--window", "forever"])
    assert result.exit_code == 2 and "bad window" in result.output


def test_alerts_panel_appears_with_a_firing_alert(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon)

        async def scenario(app: TopApp, pilot: Any) -> None:
            assert " alerts " not in screen_text(app).splitlines()[
                next(i for i, line in enumerate(screen_text(app).splitlines())
                     if "Tab: next panel" in line)]
            mon.alert("SlowOrders", "p95(http.latency) > 40", window="1h",
                      tags={"route": "/orders"})
            mon.counter("jobs.done").inc()
            mon.flush()  # the real alert engine evaluates the rule at the flush
            await until(pilot, lambda: "alerts" in app._visible_panels())
            while app.active != "alerts":
                await pilot.press("tab")
            await until(pilot, lambda: "SlowOrders" in screen_text(app))
            assert "FIRING" in screen_text(app)

        drive(db_path, scenario)
