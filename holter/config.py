"""Every setting holter reads, with its environment variable and default.

Environment variables are read once, when a :class:`Config` is built (at
``holter.start()``), never at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

from holter.errors import ConfigError

HOLTER_DB = "HOLTER_DB"
"""Path of the store file. Default: ``./holter.db`` in the working directory."""

HOLTER_APP = "HOLTER_APP"
"""App name recorded with each run. Default: the program's script name."""

HOLTER_STRICT = "HOLTER_STRICT"
"""``1`` makes bad recorded values raise :class:`holter.errors.InvalidValue`
instead of being dropped and counted. Tests turn it on. Default: off."""

HOLTER_DISABLED = "HOLTER_DISABLED"
"""``1`` makes ``holter.start()`` return a monitor that records nothing. Default: off."""

HOLTER_FLUSH_INTERVAL = "HOLTER_FLUSH_INTERVAL"
"""Seconds between flushes to the store (a number, or ``500ms``/``10s``). Default: 10."""

HOLTER_MAX_SERIES = "HOLTER_MAX_SERIES"
"""Tag combinations kept per metric before new ones go to the overflow series. Default: 2000."""

HOLTER_INSTRUMENT = "HOLTER_INSTRUMENT"
"""Automatic instrumentation to install: ``http,db,subprocess`` (any of them) or ``all``."""

INSTRUMENTATIONS = ("http", "db", "subprocess")
"""The automatic instrumentation holter knows (``holter.instrument``)."""

HOLTER_RUNTIME = "HOLTER_RUNTIME"
"""``1`` records runtime metrics (CPU, memory, GC, event-loop lag). Default: off."""

HOLTER_PARENT_RUN = "HOLTER_PARENT_RUN"
"""Set by holter for child processes: the run id of the process that started them."""

HOLTER_EXIT_TIMEOUT = "HOLTER_EXIT_TIMEOUT"
"""Longest time, in seconds, the final flush at interpreter exit may take. Default: 0.5."""

HOLTER_RULES = "HOLTER_RULES"
"""Path of an alert rules file (TOML). Default: ``./holter.toml`` when that file exists;
an empty value turns rules files off."""

DEFAULT_DB = "holter.db"
DEFAULT_RULES_FILE = "holter.toml"
"""Alert rules file read from the working directory when ``rules`` is not given."""
DEFAULT_FLUSH_INTERVAL_S = 10.0
DEFAULT_MAX_SERIES = 2000
DEFAULT_EXIT_TIMEOUT_S = 0.5
DEFAULT_RAW_RETENTION_S = 24 * 3600.0
DEFAULT_MINUTE_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_HOUR_RETENTION_S = 90 * 24 * 3600.0
DEFAULT_SPAN_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_MAX_PENDING_POINTS = 200_000
DEFAULT_STORE_TIMEOUT_S = 1.0
"""How long a flush waits for another process's write lock before trying next time."""
MIN_FLUSH_INTERVAL_S = 0.05

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_seconds(text: str | float, what: str = "duration") -> float:
    """Turn ``"10s"``, ``"500ms"``, ``"5m"``, ``"1.5"`` or a number into seconds.

    Raises :class:`ConfigError` naming ``what`` and the bad text.
    """
    if isinstance(text, bool):
        raise ConfigError(
            f"{what} must be a number of seconds or a duration like '10s', got {text!r}"
        )
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ConfigError(
                f"{what} must be a number of seconds or a duration like '500ms', '10s', '5m', "
                f"got {text!r}"
            )
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{what} must be a positive, finite number of seconds, got {text!r}")
    return seconds


def env_flag(name: str, environ: dict[str, str] | None = None) -> bool:
    """Read a boolean environment variable (``1/true/yes/on`` or ``0/false/no/off``)."""
    value = (environ if environ is not None else os.environ).get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1 or 0 (or true/false), got {value!r}")


@dataclass(frozen=True)
class Config:
    """Settings of one monitor. Build it with :meth:`Config.resolve` to apply env vars."""

    app: str = "python"
    db: str = DEFAULT_DB
    version: str | None = None
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S
    strict: bool = False
    disabled: bool = False
    max_series: int = DEFAULT_MAX_SERIES
    exit_timeout_s: float = DEFAULT_EXIT_TIMEOUT_S
    raw_retention_s: float = DEFAULT_RAW_RETENTION_S
    minute_retention_s: float = DEFAULT_MINUTE_RETENTION_S
    hour_retention_s: float = DEFAULT_HOUR_RETENTION_S
    span_retention_s: float = DEFAULT_SPAN_RETENTION_S
    sample_ratio: float = 1.0
    keep_slower_than_s: float | None = 1.0
    span_buffer: int = 65_536
    propagate_threads: bool = True
    instrument: tuple[str, ...] = ()
    runtime: bool = False
    tracemalloc: bool = False
    loop_threshold_s: float = 0.1
    parent_run: int | None = None
    max_pending_points: int = DEFAULT_MAX_PENDING_POINTS
    store_timeout_s: float = DEFAULT_STORE_TIMEOUT_S
    anomalies: bool = True  # judge every series in the collector (holter.analysis.anomaly)
    rules: str | None = None
    """Alert rules file (TOML); None: ``./holter.toml`` if it exists; ``""``: none."""
    webhook: str | None = None
    """A webhook URL that receives alert notifications (Alertmanager's webhook JSON)."""
    notifiers: tuple[object, ...] = ()
    """More alert notifiers: URLs, ``"log"``/``"stderr"``, callables, dicts or objects."""
    alerting: dict[str, object] = field(default_factory=dict)
    """Alert grouping settings (``group_wait``, ``group_interval``, ``repeat_interval``...)."""
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def resolve(
        cls,
        *,
        app: str | None = None,
        db: str | os.PathLike[str] | None = None,
        version: str | None = None,
        flush_interval: float | str | None = None,
        strict: bool | None = None,
        max_series: int | None = None,
        exit_timeout: float | str | None = None,
        environ: dict[str, str] | None = None,
        **overrides: object,
    ) -> Config:
        """Combine explicit arguments, then environment variables, then defaults."""
        env = environ if environ is not None else dict(os.environ)
        resolved_app = app or env.get(HOLTER_APP) or _default_app()
        resolved_db = os.fspath(db) if db is not None else env.get(HOLTER_DB) or DEFAULT_DB
        interval = flush_interval if flush_interval is not None else env.get(HOLTER_FLUSH_INTERVAL)
        interval_s = (
            parse_seconds(interval, "flush_interval")
            if interval is not None
            else DEFAULT_FLUSH_INTERVAL_S
        )
        if interval_s < MIN_FLUSH_INTERVAL_S:
            raise ConfigError(
                f"flush_interval must be at least {MIN_FLUSH_INTERVAL_S} s, got {interval!r}: "
                "shorter intervals keep the store's write lock busy for other processes"
            )
        exit_t = exit_timeout if exit_timeout is not None else env.get(HOLTER_EXIT_TIMEOUT)
        exit_s = (
            parse_seconds(exit_t, "exit_timeout") if exit_t is not None else DEFAULT_EXIT_TIMEOUT_S
        )
        cap = max_series if max_series is not None else env.get(HOLTER_MAX_SERIES)
        try:
            cap_n = int(cap) if cap is not None else DEFAULT_MAX_SERIES
        except ValueError:
            raise ConfigError(f"max_series must be a whole number, got {cap!r}") from None
        if cap_n < 1:
            raise ConfigError(f"max_series must be at least 1, got {cap_n}")
        instrument = overrides.pop("instrument", None)
        if instrument is None:
            instrument = env.get(HOLTER_INSTRUMENT, "")
        if isinstance(instrument, str):
            instrument = [p.strip() for p in instrument.split(",") if p.strip()]
        instrument = tuple(instrument)
        if instrument == ("all",):
            instrument = INSTRUMENTATIONS
        unknown = sorted(set(instrument) - set(INSTRUMENTATIONS))
        if unknown:
            raise ConfigError(
                f"unknown instrumentation {unknown}: choose from {list(INSTRUMENTATIONS)} "
                "(or 'all')"
            )
        runtime = overrides.pop("runtime", None)
        if runtime is None:
            runtime = env_flag(HOLTER_RUNTIME, env)
        rules = overrides.pop("rules", None)
        if rules is None:
            rules = env.get(HOLTER_RULES)
        if rules is not None:
            overrides["rules"] = os.fspath(rules)  # type: ignore[arg-type]
        if "notifiers" in overrides:
            found = overrides["notifiers"]
            single = isinstance(found, str | dict) or callable(found)
            overrides["notifiers"] = (found,) if single else tuple(found or ())  # type: ignore[arg-type]
        parent = overrides.pop("parent_run", None)
        if parent is None and env.get(HOLTER_PARENT_RUN, "").strip().isdigit():
            parent = int(env[HOLTER_PARENT_RUN])
        config = cls(
            app=str(resolved_app),
            instrument=instrument,
            runtime=bool(runtime),
            parent_run=parent,
            db=resolved_db,
            version=version,
            flush_interval_s=interval_s,
            strict=env_flag(HOLTER_STRICT, env) if strict is None else bool(strict),
            disabled=env_flag(HOLTER_DISABLED, env),
            max_series=cap_n,
            exit_timeout_s=exit_s,
        )
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {sorted(unknown)}; known settings are {sorted(known)}"
            )
        return replace(config, **overrides) if overrides else config  # type: ignore[arg-type]


def _default_app() -> str:
    import sys

    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(argv0)
    if name in ("", "-c", "-m", "__main__.py"):
        return "python"
    return name.removesuffix(".py") or "python"
