"""Alerting settings, inhibition rules, and rules files in TOML (``holter.toml``).

A rules file::

    [alerting]                       # optional; Alertmanager's defaults
    group_by = ["alertgroup"]        # + tags, e.g. ["alertgroup", "route"]
    group_wait = "30s"
    group_interval = "5m"
    repeat_interval = "4h"

    [[notifiers]]
    type = "webhook"                 # webhook | alertmanager | log | stderr | python
    url = "https://hooks.example.com/T0/B0"
    headers = { Authorization = "Bearer ..." }

    [[rules]]
    name = "slow-api"
    expr = "p95(http.latency) > 250"
    window = "5m"
    for = "2m"
    keep_firing_for = "1m"
    severity = "warning"
    summary = "API p95 is {value:.0f} ms (threshold {threshold:g})"

    [[rules]]
    name = "latency-anomaly"
    anomaly = "http.latency"
    min_severity = "high"

    [[inhibit]]                      # default: critical mutes warning/info of its group
    source = { severity = "critical" }
    target = { severity = ["warning", "info"] }
    equal = ["alertgroup"]

:func:`check_rules_file` reports every problem with its line; :func:`load_rules_file`
raises :class:`RulesFileError` listing them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from holter.alerting.notifiers import Notifier, make_notifier
from holter.alerting.rules import LABEL_NAME, Rule, RuleError, make_rule, parse_duration
from holter.config import DEFAULT_RULES_FILE
from holter.errors import ConfigError

GROUP_WAIT_S = 30.0
GROUP_INTERVAL_S = 300.0
REPEAT_INTERVAL_S = 4 * 3600.0
OUTAGE_TOLERANCE_S = 3600.0
HISTORY_RETENTION_S = 90 * 86400.0


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """Mutes alerts matching ``target`` while an alert matching ``source`` fires.

    Only when their ``equal`` labels have the same values (``equal=None``: the labels
    the notifications are grouped by). Matcher values are tuples of accepted values.
    """

    source: Mapping[str, tuple[str, ...]]
    target: Mapping[str, tuple[str, ...]]
    equal: tuple[str, ...] | None = None

    @staticmethod
    def _matches(matchers: Mapping[str, tuple[str, ...]], labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) in values for k, values in matchers.items())

    def source_matches(self, labels: Mapping[str, str]) -> bool:
        """True when an alert with ``labels`` can inhibit others."""
        return self._matches(self.source, labels)

    def target_matches(self, labels: Mapping[str, str]) -> bool:
        """True when an alert with ``labels`` can be inhibited."""
        return self._matches(self.target, labels)


DEFAULT_INHIBIT = (
    InhibitRule({"severity": ("critical",)}, {"severity": ("warning", "info")}, None),
)


@dataclass(frozen=True)
class Settings:
    """How alerts become notifications (defaults as Alertmanager's route defaults)."""

    group_by: tuple[str, ...] = ("alertgroup",)
    group_wait_s: float = GROUP_WAIT_S
    group_interval_s: float = GROUP_INTERVAL_S
    repeat_interval_s: float = REPEAT_INTERVAL_S
    outage_tolerance_s: float = OUTAGE_TOLERANCE_S
    """A pending alert not evaluated for longer than this starts its ``for`` again."""
    history_retention_s: float = HISTORY_RETENTION_S
    inhibit: tuple[InhibitRule, ...] = DEFAULT_INHIBIT


_SETTING_KEYS = {
    "group_by": "group_by", "group_wait": "group_wait_s", "group_interval": "group_interval_s",
    "repeat_interval": "repeat_interval_s", "outage_tolerance": "outage_tolerance_s",
    "history_retention": "history_retention_s", "inhibit": "inhibit",
}


def make_settings(values: Mapping[str, Any] | None, base: Settings | None = None) -> Settings:
    """Settings from a mapping (``group_wait="10s"``... or ``group_wait_s=10``)."""
    settings = base or Settings()
    changes: dict[str, Any] = {}
    for key, value in (values or {}).items():
        name = _SETTING_KEYS.get(key) or (key if key in _SETTING_KEYS.values() else None)
        if name is None:
            raise ConfigError(
                f"unknown alerting setting {key!r}; known: {', '.join(_SETTING_KEYS)}"
            )
        if name == "group_by":
            keys = [value] if isinstance(value, str) else list(value)
            for k in keys:
                if not isinstance(k, str) or not LABEL_NAME.fullmatch(k):
                    raise ConfigError(f"alerting group_by: bad label name {k!r}")
            changes[name] = tuple(keys)
        elif name == "inhibit":
            changes[name] = tuple(make_inhibit(v) for v in value)
        else:
            try:
                seconds = parse_duration(value, rule="(alerting)", what=key,
                                         allow_zero=name == "group_wait_s")
            except RuleError as exc:
                raise ConfigError(f"alerting setting {key} = {value!r}: {exc.detail}") from None
            changes[name] = seconds
    return replace(settings, **changes) if changes else settings


def make_inhibit(spec: Any) -> InhibitRule:
    """An inhibition rule from ``{"source": {...}, "target": {...}, "equal": [...]}``."""
    if isinstance(spec, InhibitRule):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"an inhibit rule is a table with source, target, equal; got {spec!r}")
    unknown = set(spec) - {"source", "target", "equal"}
    if unknown:
        raise ConfigError(f"inhibit rule: unknown keys {sorted(unknown)} (use source, target, "
                          "equal)")

    def matchers(what: str) -> dict[str, tuple[str, ...]]:
        raw = spec.get(what)
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError(f"inhibit rule: {what} must be a non-empty table of labels")
        out = {}
        for k, v in raw.items():
            values = (v,) if isinstance(v, str | int | float) else tuple(v)
            out[str(k)] = tuple(str(x) for x in values)
        return out

    equal = spec.get("equal")
    return InhibitRule(
        matchers("source"), matchers("target"),
        None if equal is None else tuple(str(e) for e in equal),
    )


# -- rules files -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a rules file: its line (None when unknown) and message."""

    line: int | None
    message: str
    level: str = "error"
    pointer: str = ""

    def format(self, path: str) -> str:
        """``FILE:LINE: error: message`` (with the caret lines when there are some)."""
        where = f"{path}:{self.line}" if self.line else path
        text = f"{where}: {self.level}: {self.message}"
        return f"{text}\n{self.pointer}" if self.pointer else text


@dataclass
class RulesFile:
    """What a rules file holds, and the problems found in it."""

    path: str
    rules: list[Rule] = field(default_factory=list)
    notifiers: list[Notifier] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """The problems that make the file unusable."""
        return [p for p in self.problems if p.level == "error"]


class RulesFileError(ConfigError):
    """Raised when a rules file cannot be read or has errors (each with its line)."""

    def __init__(self, path: str, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = "; ".join(p.format(path).split("\n")[0] for p in self.problems)
        super().__init__(lines or f"{path}: unusable rules file")


_RULE_KEYS = {
    "name", "expr", "anomaly", "window", "for", "keep_firing_for", "severity", "group",
    "labels", "summary", "description", "by", "tags", "stat", "min_severity", "actions",
}
_TOP_KEYS = {"rules", "notifiers", "alerting", "inhibit"}


def _header_lines(text: str, table: str) -> list[int]:
    pattern = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
    return [i + 1 for i, line in enumerate(text.splitlines()) if pattern.match(line)]


def _key_line(text: str, start: int | None, key: str) -> int | None:
    """The line of ``key = ...`` in the table that starts at line ``start``."""
    if start is None:
        return None
    lines = text.splitlines()
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for i in range(start, len(lines)):
        line = lines[i]
        if re.match(r"^\s*\[", line):
            break
        if pattern.match(line):
            return i + 1
    return start


def check_rules_file(path: str | os.PathLike[str]) -> RulesFile:
    """Read a rules file and collect every problem (nothing raised for the file's content)."""
    path = os.fspath(path)
    result = RulesFile(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        result.problems.append(Problem(None, f"cannot read rules file: {exc.strerror or exc}"))
        return result
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        result.problems.append(
            Problem(int(match.group(1)) if match else None, f"not valid TOML: {exc}")
        )
        return result
    for key in sorted(set(data) - _TOP_KEYS):
        result.problems.append(Problem(None, f"unknown table {key!r} is ignored (alerting "
                                       f"reads {', '.join(sorted(_TOP_KEYS))})",
                                       level="warning"))
    settings = data.get("alerting", {})
    if not isinstance(settings, Mapping):
        result.problems.append(Problem(None, "[alerting] must be a table"))
        settings = {}
    merged: dict[str, Any] = {}
    alerting_line = _first_line(text, "[alerting]")
    for key, value in settings.items():
        try:
            make_settings({key: value})
            merged[key] = value
        except (ConfigError, TypeError) as exc:
            result.problems.append(Problem(_key_line(text, alerting_line, key), str(exc)))
    inhibit = data.get("inhibit")
    if inhibit is not None:
        starts = _header_lines(text, "inhibit")
        rules = inhibit if isinstance(inhibit, list) else [inhibit]
        for i, spec in enumerate(rules):
            try:
                make_inhibit(spec)
            except (ConfigError, TypeError) as exc:
                result.problems.append(Problem(starts[i] if i < len(starts) else None,
                                               f"inhibit rule {i + 1}: {exc}"))
        merged["inhibit"] = rules
    result.settings = merged
    _check_notifiers(text, data.get("notifiers", []), result)
    _check_rules(text, data.get("rules", []), result)
    return result


def _first_line(text: str, needle: str) -> int | None:
    for i, line in enumerate(text.splitlines()):
        if line.strip().startswith(needle):
            return i + 1
    return None


def _check_notifiers(text: str, specs: Any, result: RulesFile) -> None:
    if not isinstance(specs, list):
        result.problems.append(Problem(_first_line(text, "notifiers"),
                                       "notifiers must be an array of tables ([[notifiers]])"))
        return
    starts = _header_lines(text, "notifiers")
    names: set[str] = set()
    for i, spec in enumerate(specs):
        start = starts[i] if i < len(starts) else None
        try:
            if not isinstance(spec, Mapping):
                raise ConfigError("each [[notifiers]] entry must be a table")
            notifier = make_notifier(spec)
        except ConfigError as exc:
            key = "url" if "URL" in str(exc) else "type"
            result.problems.append(Problem(_key_line(text, start, key),
                                           f"notifier {i + 1}: {exc}"))
            continue
        if notifier.name in names:
            notifier.name = f"{notifier.name}-{i + 1}"
        names.add(notifier.name)
        result.notifiers.append(notifier)


def _check_rules(text: str, specs: Any, result: RulesFile) -> None:
    if not isinstance(specs, list):
        result.problems.append(Problem(_first_line(text, "rules"),
                                       "rules must be an array of tables ([[rules]])"))
        return
    starts = _header_lines(text, "rules")
    seen: dict[str, int | None] = {}
    for i, spec in enumerate(specs):
        start = starts[i] if i < len(starts) else None
        if not isinstance(spec, Mapping):
            result.problems.append(Problem(start, f"rule {i + 1}: each [[rules]] entry must be "
                                           "a table"))
            continue
        name = spec.get("name")
        label = repr(name) if isinstance(name, str) else f"number {i + 1}"
        unknown = sorted(set(spec) - _RULE_KEYS)
        for key in unknown:
            result.problems.append(Problem(
                _key_line(text, start, key),
                f"rule {label}: unknown key {key!r}; known keys: {', '.join(sorted(_RULE_KEYS))}",
            ))
        if not isinstance(name, str):
            result.problems.append(Problem(start, f"rule {label}: needs a name"))
            continue
        if name in seen:
            result.problems.append(Problem(
                _key_line(text, start, "name"),
                f"rule {name!r} is defined twice (first at line {seen[name]})",
            ))
            continue
        seen[name] = _key_line(text, start, "name")
        if unknown:
            continue
        options = {k: v for k, v in spec.items() if k not in ("name", "for")}
        try:
            rule = make_rule(
                name,
                options.pop("expr", None),
                for_=spec.get("for", 0),
                source=f"{result.path}:{start}" if start else result.path,
                **options,
            )
        except RuleError as exc:
            key = exc.field_name or ("expr" if "expr" in spec else "anomaly")
            if key == "for_":
                key = "for"
            result.problems.append(Problem(_key_line(text, start, key), str(exc),
                                           pointer=exc.pointer()))
            continue
        except (ConfigError, TypeError, ValueError) as exc:
            result.problems.append(Problem(start, f"rule {name!r}: {exc}"))
            continue
        result.rules.append(rule)


def load_rules_file(path: str | os.PathLike[str]) -> RulesFile:
    """Read a rules file; RulesFileError listing every error with its line."""
    result = check_rules_file(path)
    if result.errors:
        raise RulesFileError(result.path, result.errors)
    return result


__all__ = [
    "DEFAULT_INHIBIT", "DEFAULT_RULES_FILE", "InhibitRule", "Problem", "RulesFile",
    "RulesFileError", "Settings", "check_rules_file", "load_rules_file", "make_inhibit",
    "make_settings",
]
