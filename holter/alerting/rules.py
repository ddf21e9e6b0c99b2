"""Alert rules: a small expression grammar over the query API, and anomaly rules.

Grammar (parsed by hand, never ``eval``)::

    expression := aggregate "(" metric [ "{" filters "}" ] ")" [ "by" "(" tags ")" ] op number
    aggregate  := rate | count | sum | mean | avg | min | max | stddev | last
                | p50 | p75 | p90 | p95 | p99 | p99.9
    metric     := a metric name: letters, digits, "_", ".", "/", "-" (starting with a letter)
    filters    := tag "=" value { "," tag "=" value }
    value      := a "double" or 'single' quoted string, a number or a bare word
    tags       := tag { "," tag }
    op         := ">" | ">=" | "<" | "<=" | "==" | "!="
    number     := an integer or decimal, optionally with an exponent (1e6, 2.5, -3)

Examples: ``p95(http.latency) > 250``, ``rate(http.requests{status="500"}) > 0.5``,
``mean(queue.depth) by (queue) >= 100``, ``last(process.memory.rss) > 5e8``.

Each aggregate is a field of :class:`holter.model.WindowStats` over the rule's window,
so ``p95`` needs a histogram, ``last`` a gauge, ``rate`` a counter or histogram.

An anomaly rule fires while the anomaly detector has an event of at least
``min_severity`` on a metric (one alert per series and statistic) within its window.

Errors are :class:`RuleError`: they name the rule, the text and the position of the bad
token, e.g. ``rule 'slow-api': expected a number after '>' at position 20 of
"p95(http.latency) > fast"``.
"""

from __future__ import annotations

import math
import operator
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from holter.errors import ConfigError

AGGREGATES: dict[str, str] = {
    "rate": "rate", "count": "count", "sum": "sum", "mean": "mean", "avg": "mean",
    "min": "min", "max": "max", "stddev": "stddev", "last": "last",
    "p50": "p50", "p75": "p75", "p90": "p90", "p95": "p95", "p99": "p99", "p99.9": "p99_9",
}
"""Aggregate names of the grammar → the :class:`holter.model.WindowStats` field they read."""

KINDS_OF: dict[str, tuple[str, ...]] = {
    "rate": ("counter", "histogram"), "count": ("counter", "gauge", "histogram"),
    "sum": ("counter", "histogram"), "mean": ("gauge", "histogram"),
    "min": ("gauge", "histogram"), "max": ("gauge", "histogram"), "stddev": ("histogram",),
    "last": ("gauge",), "p50": ("histogram",), "p75": ("histogram",), "p90": ("histogram",),
    "p95": ("histogram",), "p99": ("histogram",), "p99_9": ("histogram",),
}
"""Which kinds of metric give a value for each field (others never fire)."""

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}

ANOMALY_SEVERITIES = ("low", "medium", "high", "critical")
"""Severities of detected anomalies, mildest first (:mod:`holter.store.anomalies`)."""

RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")
SEVERITY = re.compile(r"[A-Za-z0-9_-]{1,32}")
RESERVED_LABELS = ("alertname", "alertgroup", "severity")
DEFAULT_WINDOW_S = 300.0
DEFAULT_ANOMALY_WINDOW_S = 60.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_./-]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>>=|<=|==|!=|=~|!~|>|<|=)
  | (?P<punct>[(){},])
    """,
    re.VERBOSE,
)


class RuleError(ConfigError):
    """Raised when a rule is malformed: a bad expression, duration, name or option.

    ``rule`` is the rule's name, ``text`` the offending text and ``position`` the
    0-based offset of the bad token in it (None when the whole value is wrong).
    """

    def __init__(
        self,
        rule: str,
        message: str,
        *,
        text: str | None = None,
        position: int | None = None,
        field_name: str | None = None,
    ) -> None:
        self.rule = rule
        self.detail = message
        self.text = text
        self.position = position
        self.field_name = field_name
        where = ""
        if text is not None and position is not None:
            where = f" at position {position + 1} of {text!r}"
        elif text is not None:
            where = f": {text!r}"
        super().__init__(f"rule {rule!r}: {message}{where}")

    def pointer(self) -> str:
        """Two lines: the text, and a caret under the bad token (empty without a position)."""
        if self.text is None or self.position is None:
            return ""
        return f"    {self.text}\n    {' ' * self.position}^"


# -- durations ------------------------------------------------------------------------------


def parse_duration(value: object, *, rule: str, what: str, allow_zero: bool = True) -> float:
    """Seconds of ``"30s"``, ``"5m"``, ``"1h30m"``, ``"500ms"`` or a number of seconds."""
    if isinstance(value, bool) or value is None:
        raise RuleError(rule, f"bad {what} {value!r}: use a duration such as 30s, 5m or 1h",
                        field_name=what)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if text in ("0", "0s"):
            seconds = 0.0
        elif not text or "".join(n + u for n, u in parts) != text:
            pos = _first_bad(text, parts)
            raise RuleError(
                rule, f"bad {what}: use a duration such as 30s, 5m, 1h or 1h30m",
                text=str(value), position=pos, field_name=what,
            )
        else:
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0 or (
        seconds == 0 and not allow_zero
    ):
        need = "positive" if not allow_zero else "zero or positive"
        raise RuleError(rule, f"bad {what} {value!r}: it must be {need} and finite",
                        field_name=what)
    return seconds


def _first_bad(text: str, parts: Sequence[tuple[str, str]]) -> int:
    """Offset of the first character of ``text`` that is not a ``<number><unit>`` part."""
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            number = re.match(r"\d+(?:\.\d+)?", text[pos:])
            return pos + (number.end() if number else 0) if pos < len(text) else pos
        pos = match.end()
    return max(len(text) - 1, 0)


def format_duration(seconds: float) -> str:
    """``90.0`` → ``"1m30s"`` (whole seconds; ``"0s"`` for zero)."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    left = round(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            out += f"{left // size}{unit}"
            left %= size
    return out or "0s"


# -- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind (number, name, string, op, punct, end), text and position."""

    kind: str
    text: str
    pos: int


def tokenize(text: str, rule: str = "?") -> list[Token]:
    """Split an expression into tokens.

    A character that starts no token becomes a ``bad`` token (and ends the list), so the
    parser reports problems in reading order.
    """
    out = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            out.append(Token("bad", text[pos], pos))
            break
        kind = match.lastgroup or ""
        if kind != "space":
            out.append(Token(kind, match.group(), pos))
        pos = match.end()
    out.append(Token("end", "", len(text)))
    return out


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed threshold expression: ``aggregate(metric{filters}) by (tags) op threshold``."""

    text: str
    aggregate: str
    field: str
    metric: str
    filters: tuple[tuple[str, str], ...]
    by: tuple[str, ...]
    op: str
    threshold: float

    def holds(self, value: float | None) -> bool:
        """True when ``value`` satisfies the comparison (never for a missing value)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return OPERATORS[self.op](float(value), self.threshold)

    def describe(self) -> str:
        """A normalised text form of the expression."""
        filters = ", ".join(f'{k}="{_quote(v)}"' for k, v in self.filters)
        by = f" by ({', '.join(self.by)})" if self.by else ""
        inner = f"{self.metric}{{{filters}}}" if filters else self.metric
        return f"{self.aggregate}({inner}){by} {self.op} {self.threshold:g}"


class _Parser:
    def __init__(self, text: str, rule: str) -> None:
        self.text = text
        self.rule = rule
        self.tokens = tokenize(text, rule)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind == "bad":
            if tok.text in "\"'":
                raise self.fail("unterminated string", tok)
            raise self.fail(f"unexpected character {tok.text!r}", tok)
        if tok.kind != "end":
            self.i += 1
        return tok

    def fail(self, message: str, tok: Token) -> RuleError:
        return RuleError(self.rule, message, text=self.text, position=min(tok.pos, len(self.text)))

    def shown(self, tok: Token) -> str:
        return "the end" if tok.kind == "end" else repr(tok.text)

    def expect(self, text: str, after: str) -> Token:
        tok = self.next()
        if tok.text != text or tok.kind not in ("punct", "op"):
            raise self.fail(f"expected {text!r} {after}, found {self.shown(tok)}", tok)
        return tok

    def parse(self) -> Expression:
        if self.peek().kind == "end":
            raise self.fail("empty expression; write e.g. p95(http.latency) > 250", self.peek())
        agg = self.next()
        if agg.kind != "name" or agg.text.lower() not in AGGREGATES:
            known = ", ".join(AGGREGATES)
            raise self.fail(
                f"unknown aggregate {agg.text!r}; use one of {known}" if agg.kind == "name"
                else f"expected an aggregate such as p95 or rate, found {self.shown(agg)}",
                agg,
            )
        aggregate = agg.text.lower()
        self.expect("(", f"after {aggregate}")
        metric_tok = self.next()
        if metric_tok.kind != "name" or not re.fullmatch(
            r"[A-Za-z][A-Za-z0-9_./-]{0,254}", metric_tok.text
        ):
            raise self.fail(f"expected a metric name, found {self.shown(metric_tok)}", metric_tok)
        filters = self.filters() if self.peek().text == "{" else ()
        self.expect(")", "after the metric")
        by: tuple[str, ...] = ()
        if self.peek().kind == "name" and self.peek().text == "by":
            self.next()
            by = self.tag_list()
        op_tok = self.next()
        if op_tok.kind != "op" or op_tok.text not in OPERATORS:
            raise self.fail(
                f"expected a comparison ({', '.join(OPERATORS)}), found {self.shown(op_tok)}",
                op_tok,
            )
        num = self.next()
        if num.kind != "number":
            raise self.fail(f"expected a number after {op_tok.text!r}, found {self.shown(num)}",
                            num)
        threshold = float(num.text)
        if not math.isfinite(threshold):
            raise self.fail("the threshold must be finite", num)
        end = self.next()
        if end.kind != "end":
            raise self.fail(f"unexpected {end.text!r} after the threshold", end)
        return Expression(self.text, aggregate, AGGREGATES[aggregate], metric_tok.text,
                          filters, by, op_tok.text, threshold)

    def filters(self) -> tuple[tuple[str, str], ...]:
        self.next()  # {
        out: dict[str, str] = {}
        while True:
            key = self.next()
            if key.kind == "punct" and key.text == "}" and not out:
                return ()
            if key.kind != "name" or not LABEL_NAME.fullmatch(key.text):
                raise self.fail(f"expected a tag name, found {self.shown(key)}", key)
            op = self.next()
            if op.text in ("!=", "=~", "!~"):
                raise self.fail(f"only = is supported in tag filters, not {op.text!r}", op)
            if op.text != "=":
                raise self.fail(f"expected '=' after tag {key.text!r}, found {self.shown(op)}",
                                op)
            if self.peek().kind == "bad" and self.peek().text not in "\"'":
                raise self.fail(f"unexpected character {self.peek().text!r} in the value of tag "
                                f"{key.text!r}; quote values like \"/users\"", self.peek())
            value = self.next()
            if value.kind == "string":
                text = _unquote(value.text)
            elif value.kind in ("name", "number"):
                text = value.text
            else:
                raise self.fail(f"expected a value for tag {key.text!r}, found "
                                f"{self.shown(value)}", value)
            if key.text in out:
                raise self.fail(f"tag {key.text!r} is filtered twice", key)
            out[key.text] = text
            sep = self.next()
            if sep.text == "}":
                return tuple(out.items())
            if sep.text != ",":
                raise self.fail(f"expected ',' or '}}' in the tag filters, found "
                                f"{self.shown(sep)}", sep)

    def tag_list(self) -> tuple[str, ...]:
        self.expect("(", "after 'by'")
        out: list[str] = []
        while True:
            tok = self.next()
            if tok.kind != "name" or not LABEL_NAME.fullmatch(tok.text):
                raise self.fail(f"expected a tag name, found {self.shown(tok)}", tok)
            if tok.text in out:
                raise self.fail(f"tag {tok.text!r} is listed twice", tok)
            out.append(tok.text)
            sep = self.next()
            if sep.text == ")":
                return tuple(out)
            if sep.text != ",":
                raise self.fail(f"expected ',' or ')' after {tok.text!r}, found "
                                f"{self.shown(sep)}", sep)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse_expression(text: str, rule: str = "?") -> Expression:
    """Parse a threshold expression; RuleError naming ``rule``, the text and the position."""
    if not isinstance(text, str):
        raise RuleError(rule, f"the expression must be a string, got {type(text).__name__}")
    return _Parser(text, rule).parse()


# -- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnomalyCondition:
    """Fire while the detector reports an anomaly of ``metric`` of ``min_severity`` or more.

    Optionally of one statistic (``stat``) and series with these ``tags``.
    """

    metric: str
    tags: tuple[tuple[str, str], ...] = ()
    stat: str | None = None
    min_severity: str = "medium"


@dataclass(frozen=True)
class Rule:
    """One alert rule: a condition, how long it must hold, and what to say when it fires.

    Exactly one of ``expr`` (a threshold expression) and ``anomaly`` is set.
    ``for_s``: how long the condition must hold before the alert fires (pending until
    then); ``keep_firing_for_s``: how long a firing alert stays firing after its
    condition stops holding. ``summary``/``description`` are templates formatted with
    ``value``, ``threshold``, ``metric``, ``rule``, ``window``, ``labels`` (a dict) and,
    for anomaly rules, ``expected``, ``score``, ``anomaly_severity``, ``kind``, ``stat``.
    """

    name: str
    expr: Expression | None = None
    anomaly: AnomalyCondition | None = None
    window_s: float = DEFAULT_WINDOW_S
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    severity: str = "warning"
    group: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    summary: str | None = None
    description: str | None = None
    actions: tuple[str, ...] = ()
    source: str | None = None
    """Where the rule was defined (``FILE:LINE``), for messages."""

    @property
    def metric(self) -> str:
        """The metric the rule reads."""
        if self.expr is not None:
            return self.expr.metric
        assert self.anomaly is not None
        return self.anomaly.metric

    @property
    def kind(self) -> str:
        """``threshold`` or ``anomaly``."""
        return "threshold" if self.expr is not None else "anomaly"

    def describe(self) -> str:
        """The condition as text."""
        if self.expr is not None:
            return self.expr.describe()
        assert self.anomaly is not None
        a = self.anomaly
        tags = ", ".join(f"{k}={v}" for k, v in a.tags)
        stat = f" {a.stat}" if a.stat else ""
        return (f"anomaly({a.metric}{stat}{' {' + tags + '}' if tags else ''}) "
                f">= {a.min_severity}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name, "kind": self.kind, "condition": self.describe(),
            "metric": self.metric, "window_s": self.window_s, "for_s": self.for_s,
            "keep_firing_for_s": self.keep_firing_for_s, "severity": self.severity,
            "group": self.group, "labels": dict(self.labels), "summary": self.summary,
            "description": self.description, "actions": list(self.actions),
            "source": self.source,
        }


BUILTIN_ACTIONS = ("gc", "throttle")
"""Corrective actions a rules file may name (``actions = ["gc"]``)."""


def make_rule(
    name: str,
    expr: str | None = None,
    *,
    anomaly: str | None = None,
    window: str | float | None = None,
    for_: str | float = 0,
    keep_firing_for: str | float = 0,
    severity: str = "warning",
    group: str | None = None,
    labels: Mapping[str, object] | None = None,
    summary: str | None = None,
    description: str | None = None,
    by: Sequence[str] | str | None = None,
    tags: Mapping[str, object] | None = None,
    stat: str | None = None,
    min_severity: str = "medium",
    actions: Iterable[str] = (),
    source: str | None = None,
) -> Rule:
    """Build and validate a rule; RuleError names the rule, the field and the bad text."""
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        raise RuleError(str(name), "bad rule name: use letters, digits, '_', '.', ':' or '-' "
                        "(at most 128, starting with a letter or digit)", field_name="name")
    if (expr is None) == (anomaly is None):
        raise RuleError(name, "give either an expression (expr) or anomaly=METRIC, not "
                        + ("both" if expr is not None else "neither"), field_name="expr")
    if not isinstance(severity, str) or not SEVERITY.fullmatch(severity):
        raise RuleError(name, "bad severity: use a word such as critical, warning or info",
                        text=str(severity), field_name="severity")
    group_name = name if group is None else str(group)
    if not group_name:
        raise RuleError(name, "the group must not be empty", field_name="group")
    clean_labels: dict[str, str] = {}
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or not LABEL_NAME.fullmatch(key):
            raise RuleError(name, "bad label name", text=str(key), field_name="labels")
        if key in RESERVED_LABELS:
            raise RuleError(name, f"label {key!r} is set by holter; use the rule's "
                            f"{'name' if key == 'alertname' else key} option",
                            field_name="labels")
        clean_labels[key] = str(value)
    for_s = parse_duration(for_, rule=name, what="for")
    keep_s = parse_duration(keep_firing_for, rule=name, what="keep_firing_for")
    default_window = DEFAULT_WINDOW_S if expr is not None else DEFAULT_ANOMALY_WINDOW_S
    window_s = (
        default_window if window is None
        else parse_duration(window, rule=name, what="window", allow_zero=False)
    )
    tag_filters = _tag_filters(name, tags)
    parsed: Expression | None = None
    condition: AnomalyCondition | None = None
    if expr is not None:
        parsed = parse_expression(expr, name)
        extra_by = [by] if isinstance(by, str) else list(by or [])
        for key in extra_by:
            if not isinstance(key, str) or not LABEL_NAME.fullmatch(key):
                raise RuleError(name, "bad tag name in by", text=str(key), field_name="by")
        merged_by = tuple(dict.fromkeys([*parsed.by, *extra_by]))
        merged_filters = dict(parsed.filters)
        for key, value in tag_filters:
            if key in merged_filters and merged_filters[key] != value:
                raise RuleError(name, f"tag {key!r} is filtered twice with different values",
                                field_name="tags")
            merged_filters[key] = value
        parsed = Expression(parsed.text, parsed.aggregate, parsed.field, parsed.metric,
                            tuple(merged_filters.items()), merged_by, parsed.op,
                            parsed.threshold)
        if stat is not None:
            raise RuleError(name, "stat= applies to anomaly rules only", field_name="stat")
    else:
        if not isinstance(anomaly, str) or not re.fullmatch(
            r"[A-Za-z][A-Za-z0-9_./-]{0,254}", anomaly
        ):
            raise RuleError(name, "bad metric name for anomaly", text=str(anomaly),
                            field_name="anomaly")
        if min_severity not in ANOMALY_SEVERITIES:
            raise RuleError(name, f"bad min_severity: use one of {', '.join(ANOMALY_SEVERITIES)}",
                            text=str(min_severity), field_name="min_severity")
        if stat is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,16}", str(stat)):
            raise RuleError(name, "bad stat: use value, rate, p50, p95 or p99", text=str(stat),
                            field_name="stat")
        if by:
            raise RuleError(name, "by= applies to threshold rules only (anomaly alerts are "
                            "per series already)", field_name="by")
        condition = AnomalyCondition(anomaly, tag_filters, stat, min_severity)
    action_names = tuple(actions)
    for action in action_names:
        if action not in BUILTIN_ACTIONS:
            raise RuleError(name, f"unknown action: use one of {', '.join(BUILTIN_ACTIONS)} "
                            "(or mon.on_alert for your own)", text=str(action),
                            field_name="actions")
    rule = Rule(
        name=name, expr=parsed, anomaly=condition, window_s=window_s, for_s=for_s,
        keep_firing_for_s=keep_s, severity=severity, group=group_name, labels=clean_labels,
        summary=summary, description=description, actions=action_names, source=source,
    )
    for what, template in (("summary", summary), ("description", description)):
        if template is not None:
            check_template(rule, what, template)
    return rule


def _tag_filters(rule: str, tags: Mapping[str, object] | None) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not LABEL_NAME.fullmatch(key):
            raise RuleError(rule, "bad tag name", text=str(key), field_name="tags")
        out.append((key, str(value)))
    return tuple(out)


# -- templates ------------------------------------------------------------------------------


class _Labels(dict):  # type: ignore[type-arg]
    """Labels in templates: a missing key gives an empty string, not an error."""

    def __missing__(self, key: str) -> str:
        return ""


def template_fields(rule: Rule, value: float | None, labels: Mapping[str, str],
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``summary``/``description`` templates may use."""
    out: dict[str, Any] = {
        "value": value if value is not None else float("nan"),
        "threshold": rule.expr.threshold if rule.expr is not None else float("nan"),
        "metric": rule.metric,
        "rule": rule.name,
        "window": format_duration(rule.window_s),
        "labels": _Labels(labels),
        "severity": rule.severity,
        "expected": float("nan"),
        "score": float("nan"),
        "anomaly_severity": "",
        "kind": "",
        "stat": "",
    }
    out.update(extra or {})
    return out


def render(template: str, fields: Mapping[str, Any]) -> str:
    """Format a template; on any error, the template itself (alerts must never fail here)."""
    try:
        return string.Formatter().vformat(template, (), dict(fields))
    except Exception:
        return template


def check_template(rule: Rule, what: str, template: str) -> None:
    """RuleError when a template cannot be formatted (unknown field, bad format spec)."""
    if not isinstance(template, str):
        raise RuleError(rule.name, f"{what} must be a string", field_name=what)
    fields = template_fields(rule, 1.0, {}, {"expected": 1.0, "score": 0.5})
    try:
        string.Formatter().vformat(template, (), fields)
    except KeyError as exc:
        name = exc.args[0]
        pos = template.find("{" + str(name))
        raise RuleError(
            rule.name, f"unknown field {{{name}}} in {what}; use value, threshold, metric, "
            "rule, window, severity, labels[TAG] (anomaly rules also expected, score, "
            "anomaly_severity, kind, stat)",
            text=template, position=pos if pos >= 0 else None, field_name=what,
        ) from None
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise RuleError(rule.name, f"bad {what} template ({exc})", text=template,
                        field_name=what) from None


__all__ = [
    "AGGREGATES", "ANOMALY_SEVERITIES", "BUILTIN_ACTIONS", "KINDS_OF", "OPERATORS",
    "AnomalyCondition", "Expression", "Rule", "RuleError", "Token", "check_template",
    "format_duration", "make_rule", "parse_duration", "parse_expression", "render",
    "template_fields", "tokenize",
]
