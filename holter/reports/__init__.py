"""Reports (layer 5): one model built from the store, one renderer per format.

:func:`build_report` reads the store (through :mod:`holter.store.query` and
:mod:`holter.analysis` only) into a :class:`~holter.reports.model.Report`;
:func:`render` turns it into JSON, Markdown or a self-contained HTML page;
:func:`compare` builds a :class:`~holter.reports.compare.Comparison` of two runs or a
baseline set of runs and a run. ``holter report``, ``holter compare`` and
``Monitor.report`` are thin skins over these.
"""

from __future__ import annotations

import os
from typing import Any

from holter.reports.base import FORMATS, ReportError, guess_format, renderer_for, write_atomic
from holter.reports.build import build_report
from holter.reports.model import SCHEMA_VERSION, Report


def render(data: Any, fmt: str = "md", **options: Any) -> str:
    """The text of ``data`` (a Report or a Comparison) in format ``fmt``."""
    return renderer_for(guess_format(None, fmt), **options).render(data)


def report(
    store: Any,
    *,
    format: str | None = None,
    output: str | os.PathLike[str] | None = None,
    **options: Any,
) -> str:
    """Build a report and render it; with ``output``, also write it there atomically.

    ``format`` defaults to the one ``output``'s extension names (else Markdown).
    ``options`` go to :func:`build_report` (``period``, ``since``, ``until``, ``run``,
    ``app``, ``title``, ``charts``). Returns the rendered text.
    """
    fmt = guess_format(output, format)
    if output is not None:
        from holter.reports.base import check_writable

        check_writable(output)
    data = build_report(store, charts=fmt == "html", sparklines=bool(options.pop("sparklines",
                                                                            False)), **options)
    text = render(data, fmt)
    if output is not None:
        write_atomic(output, text)
    return text


def compare(store: Any, *args: Any, **kwargs: Any) -> Any:
    """See :func:`holter.reports.compare.compare`."""
    from holter.reports.compare import compare as run_compare

    return run_compare(store, *args, **kwargs)


__all__ = ["FORMATS", "SCHEMA_VERSION", "Report", "ReportError", "build_report", "compare",
           "guess_format", "render", "renderer_for", "report", "write_atomic"]
