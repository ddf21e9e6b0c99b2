"""Automatic instrumentation: HTTP clients, databases, subprocesses (layer 2).

``install(["http", "db", "subprocess"], monitor)`` patches the libraries that are
installed (each only if importable) so every call records a span plus metrics into
``monitor``; ``uninstall()`` puts every original back. Patching never changes what
a call returns or raises; holter's own failures inside a patch are counted and the
program's call goes on.

========== ===============================================================================
name       what is instrumented
========== ===============================================================================
http       ``http.client`` (so ``urllib.request``, ``requests``, ``urllib3``), ``httpx``
           (sync and async), ``aiohttp`` client; outgoing requests carry ``traceparent``
db         ``sqlite3`` connections, ``psycopg`` (3) cursors, any DB-API 2 connection
           through :func:`holter.instrument.db.wrap_connection`
subprocess ``subprocess.Popen`` (so ``run``, ``call``, ``check_output``),
           ``asyncio.create_subprocess_exec`` / ``_shell``
========== ===============================================================================

Inbound requests are recorded by the WSGI and ASGI middlewares in
:mod:`holter.instrument.web`.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Iterable
from typing import Any

from holter.config import INSTRUMENTATIONS
from holter.errors import ConfigError
from holter.instrument._hooks import cancel_import_hooks, failed, when_imported

AVAILABLE = INSTRUMENTATIONS
"""Names :func:`install` accepts."""

TRIGGERS = {
    "http": ("http.client", "httpx", "aiohttp"),
    "db": ("sqlite3", "psycopg"),
    "subprocess": ("subprocess", "asyncio"),
}
"""The libraries each instrumentation patches: its module is imported (and installs its
patches) when the program has imported one of them, or right after it first does."""

_lock = threading.Lock()
_installed: dict[str, Any] = {}
_owners: dict[str, list[Any]] = {}  # name -> monitors that asked for it, oldest first
_recording_into: dict[str, Any] = {}  # name -> the monitor its patches record into


class Patches:
    """Attributes replaced on objects, with their originals, so they can be put back."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, str, Any, bool]] = []
        self._hooks: list[Any] = []

    def replace(self, owner: Any, name: str, make: Any) -> None:
        """Replace ``owner.name`` by ``make(original)``; remember the original."""
        own = not isinstance(owner, type) or name in owner.__dict__
        current = owner.__dict__[name] if isinstance(owner, type) and own else getattr(owner, name)
        wrapper = make(current)
        with contextlib.suppress(AttributeError, TypeError):  # e.g. a plain value
            wrapper.__holter_original__ = current
        setattr(owner, name, wrapper)
        self._done.append((owner, name, current, own))

    def when_imported(self, module: str, hook: Any) -> None:
        """Run ``hook(module)`` once ``module`` is imported (now, if it already is)."""
        self._hooks.append(hook)
        when_imported(module, hook)

    def undo(self) -> None:
        """Put every original back, newest first; forget hooks that have not run."""
        cancel_import_hooks(self._hooks)
        self._hooks.clear()
        while self._done:
            owner, name, original, own = self._done.pop()
            if own:
                setattr(owner, name, original)
            else:  # it was inherited: remove ours so the inherited one shows again
                delattr(owner, name)


def install(names: Iterable[str] = AVAILABLE, monitor: Any = None) -> list[str]:
    """Instrument ``names`` (``http``, ``db``, ``subprocess``) into ``monitor``.

    Several monitors may ask for the same instrumentation: it records into the newest
    of them, and moves to the previous one when that one stops. Returns the sorted
    names ``monitor`` now has. A library that is not installed is skipped; a name that
    holter does not know is a :class:`ConfigError`.
    """
    if monitor is None:
        raise ConfigError("instrument.install needs the monitor to record into: "
                          "install(names, monitor=mon), or holter.start(instrument=[...])")
    wanted = list(dict.fromkeys(names))
    unknown = sorted(set(wanted) - set(AVAILABLE))
    if unknown:
        raise ConfigError(f"unknown instrumentation {unknown}; choose from {list(AVAILABLE)}")
    failed.count_drop = monitor.registry.count_drop
    with _lock:
        for name in wanted:
            owners = _owners.setdefault(name, [])
            if monitor not in owners:
                owners.append(monitor)
            _activate(name, monitor)
        return sorted(n for n, owners in _owners.items() if monitor in owners)


def _activate(name: str, monitor: Any) -> None:
    """Make ``name`` record into ``monitor`` (re-patching if it recorded elsewhere)."""
    current = _installed.get(name)
    if current is not None:
        if _recording_into.get(name) is monitor:
            return
        current.undo()
    patches = Patches()
    _installed[name] = patches
    _recording_into[name] = monitor
    done: list[bool] = []

    def load(_module: Any = None) -> None:
        """Import the instrumentation and install its patches (once)."""
        if done or _installed.get(name) is not patches:  # done, or uninstalled meanwhile
            return
        done.append(True)
        module = importlib.import_module(f"holter.instrument.{name}_")
        module.install(monitor, patches)

    if any(lib in sys.modules for lib in TRIGGERS[name]):
        try:
            load()
        except BaseException:
            patches.undo()
            del _installed[name], _recording_into[name]
            raise
    else:  # nothing to patch yet: importing the instrumentation would only cost start-up
        for lib in TRIGGERS[name]:
            patches.when_imported(lib, load)


def uninstall(names: Iterable[str] | None = None, monitor: Any = None) -> None:
    """Remove instrumentation, restoring the original functions.

    With ``monitor``, only that monitor's claim goes: an instrumentation another monitor
    still wants keeps recording, into that one. Without it, ``names`` (default: all)
    are removed whoever asked for them.
    """
    with _lock:
        for name in list(names) if names is not None else list(_installed):
            owners = _owners.get(name, [])
            if monitor is not None:
                if monitor in owners:
                    owners.remove(monitor)
            else:
                owners.clear()
            if owners:
                _activate(name, owners[-1])
                continue
            _owners.pop(name, None)
            _recording_into.pop(name, None)
            patches = _installed.pop(name, None)
            if patches is not None:
                patches.undo()


def installed() -> list[str]:
    """Names currently installed."""
    return sorted(_installed)
