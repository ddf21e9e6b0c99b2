"""``holter top``: the live terminal dashboard (Textual).

The screen is a header line, the system panel (CPU, memory, RSS, GC, loop lag: values,
bars coloured by threshold, sparklines) and six panels: top series, operations, slowest
traces, alerts, anomalies and runs. In a small terminal one panel shows at a time
(``Tab`` moves on); from 120×36 up they share the screen. Alerts and anomalies appear
only when the store holds them.

Every refresh runs in a worker thread (:meth:`LiveModel.refresh`, which reads only what
changed since the last one) and hands an immutable :class:`Snapshot` to the UI, which
patches the cells that changed: rows keep their place, nothing is redrawn that did not
change, and a slow or busy store never freezes the keyboard.

Keys: ``q`` quit, ``/`` filter, ``s`` sort, ``p`` pause, ``Tab`` next panel, ``Enter``
drill down (a trace as a waterfall with its critical path, a series' statistics),
``Esc`` back, ``w`` window (1m, 5m, 15m, 1h; ``1``-``4`` directly), ``r`` refresh now,
``?`` help. ``NO_COLOR`` is honoured (Textual renders in monochrome and every
threshold also shows as ``!``/``!!``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.events import Resize
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Static

from holter.analysis.waterfall import fmt_ns, timeline_bar, trace_tree
from holter.dashboard import format as fmt
from holter.dashboard.model import (
    COLUMNS,
    PANELS,
    SORTS,
    WINDOWS,
    LiveModel,
    PanelData,
    Snapshot,
    SystemLine,
)
from holter.dashboard.widgets import RowTable
from holter.errors import HolterError

TITLES = {
    "series": "top series", "ops": "operations", "traces": "slowest traces",
    "alerts": "alerts", "anomalies": "anomalies", "runs": "runs",
}
WIDE_MIN = (120, 36)
"""Terminal size (columns, lines) from which every panel shows at once."""


@dataclass(frozen=True, slots=True)
class _Col:
    name: str
    width: int
    priority: int  # 1 is kept longest; the flexible column is never dropped
    flex: bool = False
    grow: int = 0  # extra cells it may take before the flexible column does
    right: bool = False  # numbers are right-aligned


_SPECS: dict[str, tuple[_Col, ...]] = {
    "series": (_Col("series", 24, 0, flex=True), _Col("value", 7, 1, right=True),
               _Col("rate/s", 7, 1, right=True), _Col("p50", 7, 3, right=True),
               _Col("p95", 7, 1, right=True), _Col("p99", 7, 2, right=True),
               _Col("trend", 10, 1, grow=20)),
    "ops": (_Col("operation", 18, 0, flex=True), _Col("count", 6, 3, right=True),
            _Col("rate/s", 7, 1, right=True), _Col("err%", 6, 1, right=True),
            _Col("p50", 7, 4, right=True), _Col("p95", 7, 1, right=True),
            _Col("p99", 7, 2, right=True), _Col("trend", 10, 3, grow=14)),
    "traces": (_Col("duration", 8, 1, right=True), _Col("root span", 12, 0, flex=True),
               _Col("spans", 5, 2, right=True), _Col("err", 4, 2, right=True),
               _Col("started", 8, 2, right=True), _Col("trace id", 16, 3)),
    "alerts": (_Col("state", 9, 1), _Col("rule", 12, 0, flex=True), _Col("labels", 16, 2),
               _Col("value", 7, 1, right=True), _Col("since", 8, 2, right=True)),
    "anomalies": (_Col("time", 8, 1), _Col("series", 16, 0, flex=True), _Col("stat", 5, 2),
                  _Col("kind", 12, 1), _Col("severity", 8, 1),
                  _Col("value", 8, 2, right=True), _Col("expected", 8, 3, right=True)),
    "runs": (_Col("run", 5, 1, right=True), _Col("app", 12, 0, flex=True),
             _Col("pid", 7, 2, right=True), _Col("host", 10, 3), _Col("state", 12, 1),
             _Col("started", 8, 3), _Col("last flush", 10, 2, right=True)),
}


def layout_columns(panel: str, width: int) -> list[tuple[int, str, int, bool]]:
    """Columns of ``panel`` that fit ``width`` cells: ``(index, name, width, right)`` each.

    Columns are dropped lowest priority first until the rest fit; then the trend column
    grows, then the flexible (name) column takes what is left.
    """
    specs = list(enumerate(_SPECS[panel]))
    avail = max(width - 4, 20)  # borders and the scrollbar
    while sum(c.width + 2 for _, c in specs) > avail:
        droppable = [(c.priority, i) for i, c in specs if not c.flex]
        if not droppable:
            break
        _, worst = max(droppable)
        specs = [(i, c) for i, c in specs if i != worst]
    extra = avail - sum(c.width + 2 for _, c in specs)
    out = []
    grown = {}
    for i, c in specs:
        if c.grow and extra > 0:
            add = min(c.grow, extra // 2)
            grown[i] = add
            extra -= add
    for i, c in specs:
        w = c.width + grown.get(i, 0)
        if c.flex:
            w += max(min(extra, 80), 0)
        out.append((i, c.name, w, c.right))
    assert [n for _, n, _, _ in out] == [COLUMNS[panel][i] for i, _, _, _ in out]
    return out


def format_line(cells: tuple[str, ...], cols: list[tuple[int, str, int, bool]]) -> str:
    """One row as a line: each shown cell cut or padded to its column, two spaces apart."""
    parts = []
    for i, _name, w, right in cols:
        text = fmt.fit(cells[i], w)
        parts.append(text.rjust(w) if right else text.ljust(w))
    return "  ".join(parts).rstrip()


class Panel(Vertical):
    """A bordered panel: a table and the text shown while it has no rows."""

    def __init__(self, name: str) -> None:
        super().__init__(id=f"p-{name}", classes="panel")
        self.panel = name
        self.border_title = TITLES[name]

    def compose(self) -> ComposeResult:
        """A table (whole rows selected) and an empty-state line."""
        yield RowTable(id=f"t-{self.panel}")
        yield Static("", classes="empty")


class HelpScreen(ModalScreen[None]):
    """The keys, one per action."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        """The key table."""
        keys = [
            ("q, Ctrl-C", "quit"),
            ("/", "filter rows by name (typing filters live; Enter keeps, Esc clears)"),
            ("s", "sort the focused panel by its next column (once: rows then stay put)"),
            ("p", "pause / resume refreshing"),
            ("Tab, Shift-Tab", "next / previous panel"),
            ("Enter", "drill down: a trace's waterfall, a series' statistics"),
            ("Esc", "back (or clear the filter)"),
            ("w, 1 2 3 4", "time window: " + ", ".join(WINDOWS)),
            ("r", "refresh now"),
            ("?", "this help"),
        ]
        text = Text()
        text.append("holter top — keys\n\n", style="bold")
        for key, what in keys:
            text.append(f"{key:>15}  ", style="bold")
            text.append(what + "\n")
        text.append("\nValues are over the window; rates per second of recorded time. "
                    "Thresholds: ! warning, !! critical.")
        yield Static(text, id="help")


class TraceScreen(Screen[None]):
    """One trace as a waterfall: the span tree, a bar per span, the critical path."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, model: LiveModel, trace_id: str) -> None:
        super().__init__()
        self.model = model
        self.trace_id = trace_id
        self.spans: list[dict[str, Any]] | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        """Title, waterfall table, critical path, footer."""
        yield Static(f"trace {self.trace_id} — loading…", id="trace-title")
        table: DataTable[Any] = DataTable(id="waterfall", cursor_type="row")
        yield table
        yield Static("", id="critical-path")
        yield Footer()

    def on_mount(self) -> None:
        """Read the trace in a worker thread."""
        self.run_worker(self._load, thread=True, exit_on_error=False)

    def _load(self) -> None:
        try:
            spans = self.model.trace(self.trace_id)
        except HolterError as exc:
            self.app.call_from_thread(self._show_error, str(exc))
            return
        self.app.call_from_thread(self._show, spans)

    def _show_error(self, message: str) -> None:
        self.query_one("#trace-title", Static).update(f"trace {self.trace_id}: {message}")

    def _show(self, spans: list[dict[str, Any]]) -> None:
        self.spans = spans
        tree = trace_tree(spans)
        segments = {step["span_id"]: step["segments"] for step in tree["critical_path"]}
        start = tree["start_ns"]
        total = tree["duration_ns"]
        width = self.size.width or 80
        name_w = max(min(width // 3, 40), 16)
        bar_w = max(width - name_w - 3 * 9 - 5 * 2 - 2, 10)
        table = self.query_one("#waterfall", DataTable)
        table.clear(columns=True)
        table.add_column("span", key="span", width=name_w)
        table.add_column("timeline", key="timeline", width=bar_w)
        table.add_column("duration", key="duration", width=9)
        table.add_column("self", key="self", width=9)
        table.add_column("on path", key="path", width=9)
        for s in tree["spans"]:
            mark = "●" if s["critical_ns"] else " "
            status = "" if s["status"] == "ok" else f" [{s['status']}"
            if s.get("error_type"):
                status += f": {s['error_type']}"
            status += "]" if status else ""
            label = Text(fmt.fit(f"{mark} {'  ' * s['depth']}{s['name']}{status}", name_w))
            if s["status"] == "error":
                label.stylize("bold red")
            bar = Text(timeline_bar(s, start, total, segments.get(s["span_id"], []), bar_w))
            if s["critical_ns"]:
                bar.stylize("bold")
            table.add_row(label, bar, fmt_ns(s["duration_ns"]), fmt_ns(s["self_ns"]),
                          fmt_ns(s["critical_ns"]) if s["critical_ns"] else "-",
                          key=s["span_id"])
        self.query_one("#trace-title", Static).update(
            f"trace {tree['trace_id']}  {fmt.clock(start)}  {fmt_ns(total)}  "
            f"{len(spans)} spans   (█ critical path, ░ off it; ● spans on the path)"
        )
        chain = " → ".join(f"{p['name']} ({fmt_ns(p['contribution_ns'])})"
                           for p in tree["critical_path"])
        self.query_one("#critical-path", Static).update(f"critical path: {chain}")
        table.focus()

    def action_back(self) -> None:
        """Back to the dashboard."""
        self.app.pop_screen()


class SeriesScreen(Screen[None]):
    """Every statistic of one series over the window, with a wide trend line."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, model: LiveModel, sid: int, refresh_s: float) -> None:
        super().__init__()
        self.model = model
        self.sid = sid
        self.refresh_s = refresh_s

    def compose(self) -> ComposeResult:
        """Title, statistics, trend, footer."""
        yield Static("", id="series-title")
        yield Static("", id="series-stats")
        yield Static("", id="series-trend")
        yield Footer()

    def on_mount(self) -> None:
        """Show now and at every refresh."""
        self._update()
        self.set_interval(self.refresh_s, self._update)

    def _update(self) -> None:
        if getattr(self.app, "paused", False):
            return
        detail = self.model.series_detail(self.sid)
        if detail is None:
            self.query_one("#series-title", Static).update("this series has no data here")
            return
        unit = f", {detail['unit']}" if detail["unit"] else ""
        self.query_one("#series-title", Static).update(Text(
            f"{detail['label']}  ({detail['kind']}{unit}) over the last {detail['window']}",
            style="bold"))
        text = Text()
        for name, value in detail["stats"]:
            text.append(f"{name.replace('_', '.'):>8}  ", style="bold")
            text.append(f"{value}\n")
        self.query_one("#series-stats", Static).update(text)
        width = max((self.size.width or 80) - 4, 10)
        self.query_one("#series-trend", Static).update(
            "trend  " + fmt.sparkline(detail["trend"], min(width - 7, 120)))

    def action_back(self) -> None:
        """Back to the dashboard."""
        self.app.pop_screen()


class TopApp(App[int]):
    """The dashboard. ``model`` reads the store; ``refresh_s`` is the refresh period.

    ``program_status``, when given, is asked at every refresh for a line about the
    program being watched (``holter run --top``).
    """

    TITLE = "holter top"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; }
    #header { height: 1; background: $primary-background; color: $text; }
    #message { height: auto; display: none; color: $warning; }
    #message.-shown { display: block; }
    #system { height: auto; border: round $primary; padding: 0 1; }
    #tabs { height: 1; }
    #panels { height: 1fr; }
    .panel { height: 1fr; border: round $secondary; display: none; }
    .panel:focus-within { border: round $accent; }
    .panel .empty { display: none; color: $text-muted; padding: 0 1; }
    .panel.-empty .empty { display: block; }
    .narrow .panel.-active { display: block; }
    .wide #panels { layout: grid; grid-size: 2; grid-rows: 3fr 2fr 1fr 1fr; grid-gutter: 0; }
    .wide .panel { display: block; }
    .wide #p-series { column-span: 2; }
    .wide #tabs { display: none; }
    .panel.-absent { display: none; }
    #filter { dock: bottom; display: none; height: 3; }
    #filter.-shown { display: block; }
    #notice { height: auto; padding: 1 2; display: none; }
    #notice.-shown { display: block; }
    HelpScreen { align: center middle; }
    #help { width: auto; max-width: 90%; height: auto; border: round $accent;
            padding: 1 2; background: $panel; }
    #trace-title, #series-title { height: auto; padding: 0 1; }
    #critical-path { height: auto; padding: 0 1; }
    #series-stats, #series-trend { height: auto; padding: 0 2; }
    #waterfall { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("p", "pause", "Pause"),
        Binding("tab", "next_panel", "Panel", priority=True, key_display="⇥"),
        Binding("shift+tab", "prev_panel", "Previous panel", show=False, priority=True),
        Binding("enter", "open", "Open", show=False),
        Binding("escape", "back", "Back"),
        Binding("w", "window", "Window"),
        Binding("1", "window_to('1m')", show=False),
        Binding("2", "window_to('5m')", show=False),
        Binding("3", "window_to('15m')", show=False),
        Binding("4", "window_to('1h')", show=False),
        Binding("r", "refresh_now", "Refresh", show=False),
        Binding("question_mark", "help", "Help"),
    ]

    MAIN_ONLY = frozenset({"filter", "sort", "pause", "next_panel", "prev_panel", "open",
                           "window", "window_to", "refresh_now", "help", "back"})
    """Actions of the dashboard screen itself (off in a drill-down or the help)."""

    def __init__(
        self,
        model: LiveModel,
        *,
        refresh_s: float = 1.0,
        program_status: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.refresh_s = refresh_s
        self.program_status = program_status
        self.paused = False
        self.active = "series"
        self.snapshot: Snapshot | None = None
        self.refreshes = 0
        self._reading = False
        self._wide = False
        self._layouts: dict[str, list[tuple[int, str, int, bool]]] = {}
        self._line_cache: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
            name: {} for name in PANELS}
        self._shown: dict[str, dict[str, Any]] = {name: {} for name in PANELS}
        self._signals: dict[int, Any] = {}
        self._painted: dict[int, tuple[Any, int]] = {}

    # -- building ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Header, message, system panel, tabs, the panels, filter input, footer."""
        yield Static("holter top", id="header")
        yield Static("", id="message")
        system = Static("", id="system")
        system.border_title = "system"
        yield system
        yield Static("", id="tabs")
        yield Static("", id="notice")
        with Container(id="panels"):
            for name in PANELS:
                yield Panel(name)
        yield Input(placeholder="filter rows by name — Enter keeps it, Esc clears it",
                    id="filter")
        yield Footer()

    def on_mount(self) -> None:
        """Lay out for the terminal size, start refreshing, and quit on SIGTERM/SIGINT."""
        self._relayout(self.size.width, self.size.height)
        self._set_active("series")
        notice = self.query_one("#notice", Static)
        notice.add_class("-shown")
        self._put(notice, f"reading {self.model.db} …")
        self.query_one("#panels").display = False
        self.set_interval(self.refresh_s, self._tick)
        self._tick()
        loop = asyncio.get_running_loop()
        # SIGHUP (the terminal is gone) keeps its default: ending at once is the clean exit
        # then, and Textual's shutdown could wait forever to write to a closed terminal
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, self.exit, 0)
                self._signals[sig] = previous

    def on_unmount(self) -> None:
        """Close the store; give the program its own signal handlers back."""
        self.model.close()
        loop = asyncio.get_running_loop()
        for sig, previous in self._signals.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, TypeError):
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._signals.clear()

    def on_resize(self, event: Resize) -> None:
        """Switch between one panel at a time and all of them; refit the columns."""
        self._relayout(event.size.width, event.size.height)

    def _relayout(self, width: int, height: int) -> None:
        self._wide = width >= WIDE_MIN[0] and height >= WIDE_MIN[1]
        self.screen.set_class(self._wide, "wide")
        self.screen.set_class(not self._wide, "narrow")
        for name in PANELS:
            panel_width = width if (not self._wide or name == "series") else width // 2
            cols = layout_columns(name, panel_width)
            if cols != self._layouts.get(name):
                self._layouts[name] = cols
                header = format_line(tuple(COLUMNS[name]), cols)
                self.query_one(f"#t-{name}", RowTable).set_header(header)
                self._line_cache[name] = {}
                self._shown[name] = {}
        trend = next((w for _i, col, w, _r in self._layouts["series"] if col == "trend"), 10)
        self.model.set_spark_width(trend)
        if self.snapshot is not None:
            self._apply(self.snapshot)
        self._show_tabs()

    # -- refreshing --------------------------------------------------------------------

    def _put(self, widget: Static, content: Text | str) -> None:
        """Show ``content`` in ``widget`` unless it already shows it (no needless redraw).

        A new layout happens only when its number of lines changed.
        """
        if isinstance(content, Text):
            key: Any = (content.plain, tuple((sp.start, sp.end, str(sp.style))
                                             for sp in content.spans))
            lines = content.plain.count("\n")
        else:
            key = content
            lines = content.count("\n")
        seen = self._painted.get(id(widget))
        if seen is not None and seen[0] == key:
            return
        self._painted[id(widget)] = (key, lines)
        try:
            widget.update(content, layout=seen is None or seen[1] != lines)
        except TypeError:  # Textual before 2.0: no layout argument (always a layout)
            widget.update(content)

    def _tick(self) -> None:
        if self.paused or self._reading:
            return
        self._reading = True
        self.run_worker(self._read, thread=True, exit_on_error=False, group="read")

    def _read(self) -> None:
        try:
            snap = self.model.refresh()
        except Exception as exc:  # never crash the screen: show it and try again
            snap = Snapshot(status="error", message=f"refresh failed: {exc!r}"[:300],
                            now_ns=0, window=self.model.window, scope="", system=(),
                            panels=dict.fromkeys(PANELS))
        try:
            self.call_from_thread(self._apply, snap)
        except RuntimeError:  # the app is closing
            pass
        finally:
            self._reading = False

    def _apply(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.refreshes += 1
        self._show_header(snap)
        notice = self.query_one("#notice", Static)
        blocking = snap.status in ("waiting", "error") and not any(snap.panels.values())
        notice.set_class(blocking, "-shown")
        self._put(notice, snap.message if blocking else "")
        self.query_one("#panels").display = not blocking
        self.query_one("#system").display = not blocking
        message = self.query_one("#message", Static)
        line = "" if blocking else snap.message
        status = self.program_status() if self.program_status is not None else None
        if status:
            line = f"{status}   {line}".strip()
        self._put(message, line)
        message.set_class(bool(line), "-shown")
        self._show_system(snap.system)
        for name in PANELS:
            self._sync_panel(name, snap.panels.get(name))
        self._show_tabs()
        self._update_visible()

    def _update_visible(self) -> bool:
        """Tell the model which rows are on screen (only those are computed at a refresh).

        Returns True when a row came into view that the model has not formatted since.
        """
        changed = False
        for name in PANELS:
            panel = self.query_one(f"#p-{name}", Panel)
            shown = self._shown[name].get("order", [])
            if panel.has_class("-absent") or not (self._wide or name == self.active):
                keys: frozenset[str] = frozenset()
            else:
                table = self.query_one(f"#t-{name}", RowTable)
                top = int(table.scroll_y)
                keys = frozenset(shown[top: top + max(table.size.height, 1) + 1])
            before = self.model.visible.get(name)
            if before is not None and not keys <= before:
                changed = True
            self.model.visible[name] = keys
        return changed

    def on_row_table_highlighted(self, event: RowTable.Highlighted) -> None:
        """The cursor moved (maybe scrolling): rows that came into view are computed."""
        if self._update_visible():
            self._reapply()

    def _show_header(self, snap: Snapshot) -> None:
        db = self.model.db
        parts = [
            ("holter top", "bold"),
            (f"window {snap.window}", "bold"),
            ("PAUSED", "bold reverse") if self.paused else
            (("store busy", "bold") if snap.status == "busy" else ("", "")),
            (snap.scope, ""),
            (fmt.clock(snap.now_ns) if snap.now_ns else "", ""),
            (f"every {fmt.duration(self.refresh_s)}", ""),
            (db if len(db) <= 40 else "…" + db[-39:], ""),
        ]
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, (part, style) in enumerate(p for p in parts if p[0]):
            if i:
                text.append(" │ ")
            text.append(part, style=style)
        self._put(self.query_one("#header", Static), text)

    def _show_system(self, lines: tuple[SystemLine, ...]) -> None:
        widget = self.query_one("#system", Static)
        if not lines:
            self._put(widget, Text("no runtime metrics in this window (they come with "
                                   "holter.start(runtime=True) or `holter run`)", style="dim"))
            return
        width = max(self.size.width - 4, 40)
        item_w = 38
        per_line = max(width // item_w, 1)
        text = Text()
        for i, line in enumerate(lines):
            if i and i % per_line == 0:
                text.append("\n")
            elif i:
                text.append("  ")
            style = {"ok": "green", "warn": "yellow", "crit": "bold red"}.get(line.level, "")
            mark = {"warn": "!", "crit": "!!"}.get(line.level, "")
            text.append(f"{line.label:<8}", style="bold")
            text.append(f"{line.value:>7}{mark:<2} ", style=style)
            if line.fraction is not None:
                text.append(fmt.bar(line.fraction, 8), style=style)
            else:
                text.append(" " * 8)
            text.append(" " + fmt.sparkline(line.trend, 10), style="cyan")
        self._put(widget, text)

    def _sync_panel(self, name: str, data: PanelData | None) -> None:
        panel = self.query_one(f"#p-{name}", Panel)
        panel.set_class(data is None, "-absent")
        if data is None:
            if self.active == name:
                self._set_active("series")
            self._shown[name] = {}
            return
        table = self.query_one(f"#t-{name}", RowTable)
        cols = self._layouts[name]
        rows = data.rows
        order = list(data.order)
        cache = self._line_cache[name]
        lines: dict[str, str] = {}
        for key in order:
            cells = rows[key]
            seen = cache.get(key)
            if seen is None or seen[0] is not cells:
                seen = cache[key] = (cells, format_line(cells, cols))
            lines[key] = seen[1]
        if len(cache) > 2 * len(rows) + 100:
            for key in [k for k in cache if k not in rows]:
                del cache[key]
        table.update_rows(order, lines)
        self._shown[name] = {"generation": data.generation, "order": order, "rows": rows}
        panel.set_class(not order, "-empty")
        self._put(panel.query_one(".empty", Static), data.empty if not order else "")
        title = f"{TITLES[name]} ({len(order)}" + (
            f" of {data.total})" if len(order) != data.total else ")")
        if data.sort:
            title += f" · sorted by {data.sort}"
        if self.model.filter_text and name in ("series", "ops", "traces"):
            title += f" · filter '{self.model.filter_text}'"
        if panel.border_title != title:
            panel.border_title = title

    # -- panels and focus --------------------------------------------------------------

    def _visible_panels(self) -> list[str]:
        return [n for n in PANELS
                if not self.query_one(f"#p-{n}", Panel).has_class("-absent")]

    def _set_active(self, name: str) -> None:
        self.active = name
        for n in PANELS:
            self.query_one(f"#p-{n}", Panel).set_class(n == name, "-active")
        self.query_one(f"#t-{name}", RowTable).focus()
        self._show_tabs()
        if self.snapshot is not None and self._update_visible():
            self._reapply()

    def _show_tabs(self) -> None:
        text = Text()
        for i, n in enumerate(self._visible_panels()):
            if i:
                text.append("  ")
            label = f" {TITLES[n]} "
            text.append(label, style="bold reverse" if n == self.active else "dim")
        text.append("   Tab: next panel", style="dim")
        self._put(self.query_one("#tabs", Static), text)

    def _focused_panel(self) -> str:
        focused = self.focused
        if isinstance(focused, RowTable) and focused.id and focused.id.startswith("t-"):
            return focused.id[2:]
        return self.active

    # -- actions -----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The dashboard's own keys work (and show) only on the dashboard screen."""
        on_main = not self.screen_stack or self.screen is self.screen_stack[0]
        return action not in self.MAIN_ONLY or on_main

    def action_next_panel(self) -> None:
        """Move to the next panel (Tab)."""
        self._step_panel(+1)

    def action_prev_panel(self) -> None:
        """Move to the previous panel (Shift-Tab)."""
        self._step_panel(-1)

    def _step_panel(self, step: int) -> None:
        if self.focused is not None and self.focused.id == "filter":
            self._close_filter(keep=True)
            return
        names = self._visible_panels()
        current = self._focused_panel()
        i = names.index(current) if current in names else 0
        self._set_active(names[(i + step) % len(names)])

    def action_filter(self) -> None:
        """Open the filter line (``/``); typing filters the rows at once."""
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.value = self.model.filter_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as the user types."""
        if event.input.id == "filter":
            self.model.set_filter(event.value)
            self._reapply()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter keeps the filter and returns to the panel."""
        if event.input.id == "filter":
            self._close_filter(keep=True)

    def _close_filter(self, *, keep: bool) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("-shown")
        if not keep:
            box.value = ""
            self.model.set_filter("")
            self._reapply()
        self._set_active(self.active)

    def _reapply(self) -> None:
        """Show the current data again with the model's new order or filter (no read)."""
        self.run_worker(self._rebuild_snapshot, thread=True, exit_on_error=False,
                        group="reapply")

    def _rebuild_snapshot(self) -> None:
        snap = self.model.current()
        if snap is not None:
            with contextlib.suppress(RuntimeError):
                self.call_from_thread(self._apply, snap)

    def action_sort(self) -> None:
        """Sort the focused panel by its next column, once."""
        panel = self._focused_panel()
        if panel not in SORTS:
            self.notify(f"the {TITLES[panel]} panel keeps its own order", timeout=2)
            return
        self.run_worker(lambda: self._sort_and_show(panel), thread=True, exit_on_error=False,
                        group="reapply")

    def _sort_and_show(self, panel: str) -> None:
        self.model.cycle_sort(panel)
        self._rebuild_snapshot()

    def action_pause(self) -> None:
        """Stop or resume refreshing."""
        self.paused = not self.paused
        if self.snapshot is not None:
            self._show_header(self.snapshot)
        if not self.paused:
            self._tick()

    def action_window(self) -> None:
        """Next time window (1m → 5m → 15m → 1h)."""
        self.model.next_window()
        self._tick()

    def action_window_to(self, window: str) -> None:
        """Switch to one window."""
        self.model.set_window(window)
        self._tick()

    def action_refresh_now(self) -> None:
        """Refresh at once."""
        self._tick()

    def action_help(self) -> None:
        """Show the keys."""
        self.push_screen(HelpScreen())

    def action_back(self) -> None:
        """Esc: close the filter (clearing it) or leave a drill-down."""
        box = self.query_one("#filter", Input)
        if box.has_class("-shown") or self.model.filter_text:
            self._close_filter(keep=False)

    def action_open(self) -> None:
        """Enter: drill into the selected row of the focused panel."""
        panel = self._focused_panel()
        key = self.query_one(f"#t-{panel}", RowTable).cursor_key
        if key is not None:
            self._open(panel, key)

    def on_row_table_selected(self, event: RowTable.Selected) -> None:
        """Enter on a row of a dashboard table."""
        table_id = event.table.id or ""
        if table_id.startswith("t-"):
            self._open(table_id[2:], event.key)

    def _open(self, panel: str, key: str) -> None:
        if panel == "traces":
            self.push_screen(TraceScreen(self.model, key))
            return
        sid = self.model.series_key_of(panel, key)
        if sid is not None:
            self.push_screen(SeriesScreen(self.model, sid, self.refresh_s))
