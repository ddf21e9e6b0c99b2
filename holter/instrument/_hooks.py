"""What every instrumentation needs before any of it is loaded: import hooks, failure counting.

Kept apart from :mod:`holter.instrument._common` (tags, SQL shapes, path templates) so that
watching for a library's import costs no regular expression compiling: the
instrumentation of a library is imported only when the program imports that library.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("holter")


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
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            # taken now, not when the module was found: a hook may be added while the
            # module runs (a library it imports may install instrumentation that waits
            # for it), and a spec that is found but never loaded must not lose them
            self.run(fullname, module)

        spec.loader = _HookedLoader(loader, exec_module)
        return spec

    def run(self, fullname: str, module: Any) -> None:
        """Run (once) the hooks waiting for ``fullname``, now that it has loaded."""
        parent, _, child = fullname.rpartition(".")
        if parent and parent in sys.modules:  # as the import system is about to: hooks
            setattr(sys.modules[parent], child, module)  # may reach it as `package.child`
        while True:  # a hook may add hooks for this module (it is still importing)
            hooks = self.hooks.pop(fullname, None)
            if not hooks:
                return
            for hook in hooks:
                try:
                    hook(module)
                except Exception as exc:
                    failed(f"import hook {fullname}", exc)


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
        spec = getattr(module, "__spec__", None)
        loading = getattr(spec, "_initializing", False)
        if not (loading and isinstance(getattr(spec, "loader", None), _HookedLoader)):
            hook(module)
            return
        # still running its own code, through our loader: the hook runs when it is done
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
