"""Renderers: one per format, each turning the report model into text.

As pyinstrument's ``renderers/base.py``: a :class:`Renderer` has a
``render(data) -> str`` and an ``output_file_extension``; :func:`guess_format` picks the
format from an output file's name; :func:`write_atomic` writes through a temporary
file in the same directory and renames it, so a reader never sees half a report and
a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from holter.errors import HolterError

FORMATS = ("json", "md", "html")
"""Formats a report or a comparison renders to."""
_EXTENSIONS = {".json": "json", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html"}


class ReportError(HolterError):
    """Raised for a report that cannot be written (bad format, output path unusable)."""


class Renderer(ABC):
    """Turns a report (or comparison) model into the text of one format."""

    output_file_extension: ClassVar[str] = "txt"
    """The extension of files in this format, without the dot."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    def render(self, data: Any) -> str:
        """The whole document for ``data`` (a Report or a Comparison)."""


def renderer_for(fmt: str, **options: Any) -> Renderer:
    """The renderer of format ``fmt`` (``json``, ``md`` or ``html``)."""
    if fmt == "json":
        from holter.reports.json import JsonRenderer

        return JsonRenderer(**options)
    if fmt in ("md", "markdown"):
        from holter.reports.markdown import MarkdownRenderer

        return MarkdownRenderer(**options)
    if fmt == "html":
        from holter.reports.html import HtmlRenderer

        return HtmlRenderer(**options)
    raise ReportError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")


def guess_format(path: str | os.PathLike[str] | None, fmt: str | None = None) -> str:
    """The format to write: ``fmt`` if given, else from ``path``'s extension, else ``md``."""
    if fmt:
        if fmt not in (*FORMATS, "markdown"):
            raise ReportError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
        return "md" if fmt == "markdown" else fmt
    if path is None or os.fspath(path) == "-":
        return "md"
    ext = Path(path).suffix.lower()
    if ext not in _EXTENSIONS:
        raise ReportError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension: name it "
            ".json, .md or .html, or pass --format"
        )
    return _EXTENSIONS[ext]


def check_writable(path: str | os.PathLike[str]) -> Path:
    """The output path, resolved; ReportError if its directory is missing or not writable."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ReportError(f"cannot write {os.fspath(path)!r}: directory {str(parent)!r} "
                          "does not exist")
    if target.is_dir():
        raise ReportError(f"cannot write {os.fspath(path)!r}: it is a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write {os.fspath(path)!r}: directory {str(parent)!r} "
                          "is not writable")
    return target


def write_atomic(path: str | os.PathLike[str], text: str | bytes) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    On any failure the temporary file is removed and ReportError raised: either the
    whole new file is there, or the old one (or none) is.
    """
    target = check_writable(path)
    data = text.encode("utf-8") if isinstance(text, str) else text
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                   dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise ReportError(f"cannot write {os.fspath(path)!r}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return target


__all__ = ["FORMATS", "Renderer", "ReportError", "check_writable", "guess_format",
           "renderer_for", "write_atomic"]
