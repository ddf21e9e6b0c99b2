"""Widgets of the dashboard: :class:`RowTable`, a cheap live table.

Textual's ``DataTable`` renders every visible cell through Rich again whenever any cell
changes; a dashboard that updates every second then spends most of its CPU redrawing
text that did not change. :class:`RowTable` takes rows as finished lines of text
(columns already laid out), keeps them by key, and on each update repaints only the
screen lines whose text changed — one string and one style per line, no Rich layout.
"""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.events import Click
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip


class RowTable(ScrollView, can_focus=True):
    """A fixed header line and rows of text by key, with a row cursor; Enter selects.

    Rows keep the order they are given; :meth:`update_rows` repaints only lines whose
    text changed (or that moved).
    """

    DEFAULT_CSS = """
    RowTable { height: auto; max-height: 100%; overflow-x: hidden; overflow-y: auto; }
    RowTable > .rowtable--header { text-style: bold; }
    RowTable > .rowtable--cursor { background: $accent 40%; text-style: bold; }
    RowTable:focus > .rowtable--cursor { background: $accent; color: $text; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"rowtable--header", "rowtable--cursor"}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Open", key_display="⏎"),
        Binding("up", "cursor(-1)", show=False),
        Binding("down", "cursor(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "cursor(-1000000000)", show=False),
        Binding("end", "cursor(1000000000)", show=False),
    ]

    class Selected(Message):
        """Enter (or a click) on a row."""

        def __init__(self, table: RowTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

    class Highlighted(Message):
        """The cursor moved to another row."""

        def __init__(self, table: RowTable, key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.header = ""
        self.order: list[str] = []
        self.lines: dict[str, str] = {}
        self.cursor = 0
        self._index: dict[str, int] = {}

    # -- data --------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        """Number of rows."""
        return len(self.order)

    @property
    def cursor_key(self) -> str | None:
        """Key of the row under the cursor (None when there are no rows)."""
        return self.order[self.cursor] if self.order else None

    def set_header(self, header: str) -> None:
        """The header line (column names, laid out like the rows)."""
        if header != self.header:
            self.header = header
            self._repaint(0)

    def _repaint(self, y: int) -> None:
        """Repaint line ``y`` of the widget (0 is the header)."""
        self.refresh(Region(0, y, self.size.width, 1))

    def update_rows(self, order: list[str], lines: dict[str, str]) -> None:
        """Show ``order`` (keys) with their ``lines``; repaint only what changed."""
        old_order = self.order
        old_lines = self.lines
        keep = self.cursor_key
        self.order = list(order)
        self.lines = dict(lines)
        self._index = {k: i for i, k in enumerate(self.order)}
        if keep is not None and keep in self._index:
            self.cursor = self._index[keep]
        else:
            self.cursor = min(self.cursor, max(len(self.order) - 1, 0))
        if len(old_order) != len(self.order):
            self.virtual_size = Size(self.size.width, len(self.order) + 1)
            self.refresh()
            return
        top = int(self.scroll_y)
        for y in range(1, max(self.size.height, 1)):
            i = top + y - 1
            if i >= len(self.order):
                break
            key = self.order[i]
            if i >= len(old_order) or old_order[i] != key or old_lines.get(key) != lines[key]:
                self._repaint(y)
        if keep != self.cursor_key:
            self.refresh()

    # -- drawing -----------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the widget: the header, or a row (the cursor's highlighted)."""
        width = self.size.width
        if y == 0:
            style = self.get_component_rich_style("rowtable--header")
            return Strip([Segment(self.header[:width].ljust(width), style)], width)
        i = int(self.scroll_y) + y - 1
        if i < 0 or i >= len(self.order):
            return Strip.blank(width, self.rich_style)
        text = self.lines.get(self.order[i], "")[:width].ljust(width)
        if i == self.cursor:
            style = self.get_component_rich_style("rowtable--cursor")
        else:
            style = self.rich_style or Style()
        return Strip([Segment(text, style)], width)

    def on_resize(self) -> None:
        """Keep the scroll range in step with the width."""
        self.virtual_size = Size(self.size.width, len(self.order) + 1)

    # -- moving ------------------------------------------------------------------------

    def move_cursor(self, index: int) -> None:
        """Put the cursor on row ``index`` (clamped) and scroll it into view."""
        if not self.order:
            return
        before = self.cursor
        self.cursor = min(max(index, 0), len(self.order) - 1)
        rows_in_view = max(self.size.height - 1, 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + rows_in_view:
            self.scroll_to(y=self.cursor - rows_in_view + 1, animate=False)
        if before != self.cursor:
            self.refresh()
            self.post_message(self.Highlighted(self, self.cursor_key))

    def action_cursor(self, step: int) -> None:
        """Move the cursor ``step`` rows."""
        self.move_cursor(self.cursor + step)

    def action_page(self, pages: int) -> None:
        """Move the cursor a screenful."""
        self.move_cursor(self.cursor + pages * max(self.size.height - 2, 1))

    def action_select(self) -> None:
        """Enter: tell the app which row."""
        key = self.cursor_key
        if key is not None:
            self.post_message(self.Selected(self, key))

    def on_click(self, event: Click) -> None:
        """A click puts the cursor on a row; a second click on it selects it."""
        i = int(self.scroll_y) + event.y - 1
        if 0 <= i < len(self.order):
            if i == self.cursor:
                self.action_select()
            else:
                self.move_cursor(i)

    def watch_scroll_y(self, old: float, new: float) -> None:
        """Scrolled: repaint, and report so the app can compute the rows now in view."""
        super().watch_scroll_y(old, new)
        self.post_message(self.Highlighted(self, self.cursor_key))
