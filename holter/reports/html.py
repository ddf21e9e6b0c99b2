"""HTML: one self-contained page — styles, uPlot and the page's script inlined, no network.

Every string from the data goes through Jinja2's autoescaping (HTML text and
attributes) or, for the charts, into a ``<script type="application/json">`` block
with ``<``, ``>``, ``&`` and ``'`` written as Unicode escapes (so no data can close
the block), read by the page's script with ``JSON.parse`` and handed to the page
only through ``textContent`` and the canvas. A Content-Security-Policy allows only
the inline scripts whose SHA-256 hashes the page lists and forbids every fetch, so
even a string that slipped through could not run code or reach the network.
"""

from __future__ import annotations

import base64
import hashlib
import math
from functools import cache
from importlib import resources
from typing import Any

from holter._version import __version__
from holter.reports import fmt
from holter.reports.base import Renderer, ReportError
from holter.reports.model import SCHEMA_ID, Evidence, Report


@cache
def _static(name: str) -> str:
    return (resources.files("holter.reports") / "static" / name).read_text(encoding="utf-8")


def _hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


class _ByStat(dict):  # type: ignore[type-arg]
    """A row's changes by statistic; a missing one is None (StrictUndefined-safe)."""

    def __init__(self, changes: Any) -> None:
        super().__init__((c.stat, c) for c in changes)

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def _fmt_change(change: float | None) -> str:
    from holter.reports.compare import _fmt_change as fmt_change

    return fmt_change(change)


def _evidence_value(e: Evidence) -> str:
    return fmt.percent(e.value) if e.unit == "ratio" else fmt.num(e.value, e.unit)


def _evidence_threshold(e: Evidence) -> str:
    return fmt.percent(e.threshold) if e.unit == "ratio" else fmt.num(e.threshold, e.unit)


@cache
def environment() -> Any:
    """The Jinja2 environment (autoescaping on, undefined names are errors)."""
    try:
        import jinja2
    except ImportError:
        raise ReportError(
            "HTML reports need Jinja2: pip install 'holter[report]' (or pip install jinja2)"
        ) from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("holter.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({
        "change": _fmt_change, "by_stat": _ByStat,
        "sortv": lambda v: "" if v is None or not math.isfinite(v) else v,
        "num": fmt.num, "seconds": fmt.seconds, "when": fmt.when, "percent": fmt.percent,
        "tags": fmt.tags, "evidence_value": _evidence_value,
        "evidence_threshold": _evidence_threshold,
    })
    return env


def chart_data(charts: list[Any]) -> dict[str, Any]:
    """What the page's script draws: times in epoch seconds, values, marked periods."""
    return {"charts": [
        {
            "title": c.title, "unit": c.unit,
            "times": [t / 1e9 for t in c.times_ns],
            "lines": [{"label": line.label, "values": line.values} for line in c.lines],
            "marks": [{"kind": m.kind, "label": m.label, "start": m.start_ns / 1e9,
                       "end": m.end_ns / 1e9} for m in c.marks],
        }
        for c in charts
    ]}


def page(template: str, **context: Any) -> str:
    """Render ``template`` with the inlined styles and scripts and the CSP of their hashes."""
    from holter.reports.model import clean

    scripts = [_static("uPlot.iife.min.js"), _static("report.js")]
    return environment().get_template(template).render(
        css=_static("uPlot.min.css") + "\n" + _static("report.css"),
        scripts=[_safe(s) for s in scripts],
        script_sources=" ".join(_hash(s) for s in scripts),
        version=__version__, schema_id=SCHEMA_ID,
        chart_data=clean(context.pop("chart_data", {"charts": []})),
        **context,
    )


def _safe(script: str) -> Any:
    import markupsafe

    if "</script" in script.lower():  # pragma: no cover - vendored files are checked
        raise ReportError("an embedded script contains '</script'")
    return markupsafe.Markup(script)


class HtmlRenderer(Renderer):
    """A single self-contained HTML page with charts and sortable tables."""

    output_file_extension = "html"

    def render(self, data: Any) -> str:
        """The page for a Report or a Comparison."""
        if isinstance(data, Report):
            return page("report.html.j2", title=data.title, r=data,
                        chart_data=chart_data(data.charts))
        from holter.reports.compare import Comparison

        if isinstance(data, Comparison):
            return page("compare.html.j2", title=data.title, c=data)
        raise TypeError(f"cannot render {type(data).__name__} as HTML")


__all__ = ["HtmlRenderer", "chart_data", "environment", "page"]
