"""The live terminal dashboard (``holter top``), built on Textual.

:mod:`holter.dashboard.model` reads the store incrementally through
:mod:`holter.store.query` and knows nothing of Textual; :mod:`holter.dashboard.app`
draws it. Textual is imported only when a dashboard starts (``pip install
'holter[dashboard]'``), so ``import holter`` never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from holter.errors import ConfigError

INSTALL_HINT = "the dashboard needs Textual: pip install 'holter[dashboard]'"


def require_textual() -> None:
    """Raise :class:`ConfigError` with the install command when Textual is missing."""
    try:
        import textual  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def run(
    db: str,
    *,
    window: str = "5m",
    refresh_s: float = 1.0,
    run: int | None = None,
    app: str | None = None,
    resolve_run: Callable[[], int | None] | None = None,
    program_status: Callable[[], str | None] | None = None,
) -> Any:
    """Run the dashboard on the store at ``db`` until the user quits; return the app.

    ``run``/``app`` limit it to one run (and the runs that run started) or one app;
    ``resolve_run`` is asked at each refresh for the run to watch until it answers;
    ``program_status`` gives a line about a program being watched (``holter run --top``).
    A store that does not exist yet is waited for; a store of a newer schema raises
    :class:`holter.errors.SchemaError` before the screen starts.
    """
    require_textual()
    from holter.dashboard.app import TopApp
    from holter.dashboard.model import LiveModel, Scope

    model = LiveModel(db, window=window, scope=Scope(run=run, app=app),
                      resolve_run=resolve_run)
    model.check()
    top = TopApp(model, refresh_s=refresh_s, program_status=program_status)
    top.run()
    return top
