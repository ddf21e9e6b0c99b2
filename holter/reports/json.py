"""JSON: the report model as it is, described by ``schema/report-1.json``."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from holter.reports.base import Renderer
from holter.reports.model import clean


class JsonRenderer(Renderer):
    """The report (or comparison) as indented JSON; NaN and infinities become null."""

    output_file_extension = "json"

    def render(self, data: Any) -> str:
        """``data.as_dict()`` as JSON text."""
        return json.dumps(clean(data.as_dict()), indent=2, ensure_ascii=False,
                          allow_nan=False) + "\n"


def schema(name: str = "report") -> dict[str, Any]:
    """The JSON Schema of the current version of ``report`` or ``compare`` output."""
    files = resources.files("holter.reports") / "schema"
    return json.loads((files / f"{name}-1.json").read_text(encoding="utf-8"))


__all__ = ["JsonRenderer", "schema"]
