"""Shared pieces of automatic instrumentation: low-cardinality tags and safe patching.

Everything here runs on the program's threads, inside calls the program made, so it
must be cheap and must never change what the call returns or raises: holter's own
failures are caught, counted in ``holter.dropped{reason="instrumentation_error"}`` and
logged once.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("holter")

_ID_SEGMENT = re.compile(
    r"""^(
        \d+                                           # 123
      | [0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}  # uuid
      | [0-9a-fA-F]{16,}                              # long hex (hashes, object ids)
      | (?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}        # long tokens with digits
    )$""",
    re.VERBOSE,
)
MAX_PATH_SEGMENTS = 8
"""Deeper paths are cut, with ``/…`` at the end, to keep templates few."""


_templates: dict[str, str] = {}


def path_template(path: str) -> str:
    """The path as a template, cached (see :func:`make_path_template`)."""
    known = _templates.get(path)
    if known is None:
        known = make_path_template(path)
        if len(_templates) >= 8192:  # bounded: ids make paths unique
            _templates.clear()
        _templates[path] = known
    return known


def make_path_template(path: str) -> str:
    """``/users/123/orders/9f3c…`` → ``/users/{id}/orders/{id}`` (no query, no fragment).

    Numbers, UUIDs, long hex strings and long digit-bearing tokens become ``{id}``, so a
    metric tagged with the template has as many series as the API has routes, not as
    many as it has users.
    """
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    parts = path.split("/")
    if not any(c.isdigit() for c in path) and len(parts) <= MAX_PATH_SEGMENTS + 1:
        return path if path.startswith("/") else "/" + path  # no ids: its own template
    out = ["{id}" if _ID_SEGMENT.match(p) else p for p in parts[: MAX_PATH_SEGMENTS + 1]]
    text = "/".join(out)
    if len(parts) > MAX_PATH_SEGMENTS + 1:
        text += "/…"
    return text if text.startswith("/") else "/" + text


# One pass over the statement, so a quote inside a comment (or a comment marker inside a
# string) cannot shift what is taken for a literal. Order matters: comments and quoted
# text first, then numbers and parameters.
_TOKEN = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z))
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<string>'(?:[^']|'')*(?:'|\Z))
    | (?P<ident>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
    | (?P<hex>(?<![\w$])0[xX][0-9a-fA-F]+\b|(?<![\w$])[xX]'[0-9a-fA-F]*')
    | (?P<number>(?<![\w$])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\b)
    | (?P<param>%\(\w+\)s|%s|(?<![:\w]):[A-Za-z_]\w*|\$\d+|\?\d*)
    """,
    re.VERBOSE | re.DOTALL,
)
_NAME_BEFORE = re.compile(r"(?:\b(?:FROM|INTO|UPDATE|TABLE|JOIN|EXISTS)|\.)$", re.IGNORECASE)
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_VALUES_LIST = re.compile(r"(VALUES\s*\(\?\))(?:\s*,\s*\(\?\))+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_NAME_PART = r"(?:\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|\w+)"
_TABLE = re.compile(
    rf"\b(?:FROM|INTO|UPDATE|TABLE|JOIN)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
    rf"({_NAME_PART}(?:\.{_NAME_PART})*)",
    re.IGNORECASE,
)
MAX_STATEMENT = 300
"""Longest statement shape stored, in characters."""


def _shape_token(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "comment":
        return " "
    if kind == "ident":
        text = match.group(0)
        before = match.string[: match.start()].rstrip()
        after = match.string[match.end() : match.end() + 1]
        # a quoted name where a table or column name goes is kept; anything else may be a
        # string literal (MySQL's double quotes) and is hidden
        if _NAME_BEFORE.search(before) or after == "." or len(text) <= 2:
            return text
        return "?"
    return "?"


def sql_shape(sql: object) -> str:
    """The statement's shape: literals and parameters as ``?``, lists collapsed, spaces squeezed.

    ``SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'x'`` →
    ``SELECT * FROM t WHERE id IN (?) AND name = ?``. Strings (standard, ``E''``,
    dollar-quoted), numbers (decimal and hex), parameters and comments never survive;
    quoted names survive where a table name goes. Parameters are never stored.
    """
    raw = isinstance(sql, bytes | bytearray)
    text = bytes(sql).decode("utf-8", "replace") if raw else str(sql)  # type: ignore[arg-type]
    text = _TOKEN.sub(_shape_token, text)
    text = _SPACE.sub(" ", text).strip()
    text = _IN_LIST.sub("(?)", text)
    text = re.sub(r"\(\s*\?\s*\)", "(?)", text)
    text = _VALUES_LIST.sub(r"\1", text)
    if len(text) > MAX_STATEMENT:
        text = text[: MAX_STATEMENT - 1] + "…"
    return text


def sql_operation(shape: str) -> str:
    """The statement's first keyword, upper case (``SELECT``, ``INSERT``, ``BEGIN``...)."""
    word = shape.split(" ", 1)[0].upper() if shape else ""
    return word if word.isalpha() and len(word) <= 12 else "OTHER"


def sql_table(shape: str) -> str:
    """The first table the statement names (without its quotes), or ``""``."""
    match = _TABLE.search(shape)
    if not match:
        return ""
    return re.sub(r'["`\[\]]', "", match.group(1))[:64]


class Failures:
    """Count and log (once per place) holter's own failures inside instrumentation."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self.count_drop: Callable[[str, int, object], None] | None = None

    def __call__(self, where: str, exc: BaseException) -> None:
        """Record that instrumentation code at ``where`` failed with ``exc``."""
        try:
            if self.count_drop is not None:
                self.count_drop("instrumentation_error", 1, f"{where}: {exc!r}")
            if where not in self._seen:
                self._seen.add(where)
                logger.warning(
                    "holter instrumentation of %s failed (%r); the program's call went on "
                    "unchanged, and further failures there are only counted", where, exc,
                )
        except Exception:  # pragma: no cover - never let accounting fail the program
            pass


failed = Failures()
"""The process-wide failure counter (the monitor wires its drop counter in)."""


def original(obj: Any, name: str) -> Any:
    """The unpatched attribute behind a holter patch (or the attribute itself)."""
    value = getattr(obj, name)
    return getattr(value, "__holter_original__", value)


class _AfterImport:
    """A ``sys.meta_path`` finder that runs hooks right after a module is first imported.

    Instrumenting a library that the program never imports must cost nothing: importing
    ``aiohttp`` or ``psycopg`` just to patch them costs ~0.1 s each at start-up.
    """

    def __init__(self) -> None:
        self.hooks: dict[str, list[Callable[[Any], None]]] = {}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        """Find the module with the other finders; run the hooks once it has loaded."""
        if fullname not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        hooks = self.hooks.pop(fullname, [])
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            for hook in hooks:
                try:
                    hook(module)
                except Exception as exc:
                    failed(f"import hook {fullname}", exc)

        spec.loader = _HookedLoader(loader, exec_module)
        return spec


class _HookedLoader:
    """A loader that runs the real loader, then holter's hooks (see :class:`_AfterImport`)."""

    def __init__(self, loader: Any, exec_module: Callable[[Any], None]) -> None:
        self._loader = loader
        self.exec_module = exec_module

    def create_module(self, spec: Any) -> Any:
        """As the real loader."""
        return self._loader.create_module(spec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


_after_import = _AfterImport()


def when_imported(name: str, hook: Callable[[Any], None]) -> None:
    """Run ``hook(module)`` now if ``name`` is imported, else right after its first import."""
    module = sys.modules.get(name)
    if module is not None:
        hook(module)
        return
    if _after_import not in sys.meta_path:
        sys.meta_path.insert(0, _after_import)
    _after_import.hooks.setdefault(name, []).append(hook)


def cancel_import_hooks(hooks: list[Callable[[Any], None]]) -> None:
    """Forget hooks that have not run yet."""
    for name in list(_after_import.hooks):
        kept = [h for h in _after_import.hooks[name] if h not in hooks]
        if kept:
            _after_import.hooks[name] = kept
        else:
            del _after_import.hooks[name]
