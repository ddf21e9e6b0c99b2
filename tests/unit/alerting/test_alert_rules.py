"""The rule grammar, rule options, rules files and notifier configuration: what is accepted,
and errors that name the rule, the text and the position of the bad token."""

from __future__ import annotations

from pathlib import Path

import pytest

import holter.testing
from holter.alerting.config import (
    RulesFileError,
    check_rules_file,
    load_rules_file,
    make_settings,
)
from holter.alerting.notifiers import (
    AlertmanagerNotifier,
    WebhookNotifier,
    make_notifier,
    mask_url,
)
from holter.alerting.rules import RuleError, make_rule, parse_duration, parse_expression
from holter.errors import ConfigError

# -- expressions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "metric", "filters", "by", "op", "threshold"),
    [
        ("p95(http.latency) > 250", "p95", "http.latency", (), (), ">", 250.0),
        ("p99.9(http.latency) >= 1.5", "p99_9", "http.latency", (), (), ">=", 1.5),
        ('rate(http.requests{status="500"}) > 0.5', "rate", "http.requests",
         (("status", "500"),), (), ">", 0.5),
        ("rate(http.requests{status=500, method='GET'}) > 0", "rate", "http.requests",
         (("status", "500"), ("method", "GET")), (), ">", 0.0),
        ("mean(queue.depth) by (queue) >= 100", "mean", "queue.depth", (), ("queue",), ">=",
         100.0),
        ("avg(queue.depth) by (queue, host) < -3", "mean", "queue.depth", (),
         ("queue", "host"), "<", -3.0),
        ("last(process.memory.rss)>5e8", "last", "process.memory.rss", (), (), ">", 5e8),
        ("  count ( jobs/done-ok )  ==  0 ", "count", "jobs/done-ok", (), (), "==", 0.0),
        ("stddev(x{a=\"q\\\"uote\"}) != 1", "stddev", "x", (("a", 'q"uote'),), (), "!=", 1.0),
    ],
)
def test_valid_expressions(text, field, metric, filters, by, op, threshold) -> None:
    expr = parse_expression(text, "r")
    assert (expr.field, expr.metric, expr.filters, expr.by, expr.op, expr.threshold) == (
        field, metric, filters, by, op, threshold)
    again = parse_expression(expr.describe(), "r")  # the normal form parses to the same
    assert (again.field, again.metric, again.filters, again.by, again.op) == (
        expr.field, expr.metric, expr.filters, expr.by, expr.op)


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("p96(http.latency) > 250", 0, "unknown aggregate 'p96'"),
        ("p95(http.latency) >> 250", 19, "expected a number after '>'"),
        ("p95 http.latency > 250", 4, "expected '('"),
        ("p95(http.latency > 250", 17, "expected ')'"),
        ("p95(http.latency) 250", 18, "expected a comparison"),
        ("p95(http.latency) > fast", 20, "expected a number"),
        ("p95(http.latency) > 250 and 1", 24, "unexpected 'and'"),
        ("p95(http.latency) > 250ms", 23, "unexpected 'ms'"),
        ('rate(x{status!="500"}) > 1', 13, "only = is supported"),
        ('rate(x{status="500) > 1', 14, "unterminated string"),
        ("rate(x{status=}) > 1", 14, "expected a value"),
        ("rate(x{1a=2}) > 1", 7, "expected a tag name"),
        ("rate(x) by route > 1", 11, "expected '('"),
        ("rate(x) ; 1", 8, "unexpected character ';'"),
        ("rate(9x) > 1", 5, "expected a metric name"),
        ("", 0, "empty expression"),
        ("__import__('os').system('true') > 1", 0, "unknown aggregate '__import__'"),
    ],
)
def test_bad_expressions_name_rule_text_and_position(text: str, position: int, words: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_expression(text, "slow-api")
    err = info.value
    assert err.rule == "slow-api"
    assert err.text == text
    assert err.position == position, str(err)
    message = str(err)
    assert message.startswith("rule 'slow-api': ")
    assert words in message
    assert f"at position {position + 1} of {text!r}" in message
    caret = err.pointer().splitlines()
    assert caret[1].index("^") - 4 == position


def test_comparison_semantics() -> None:
    expr = parse_expression("p95(h) > 250", "r")
    assert expr.holds(251) and not expr.holds(250) and not expr.holds(None)
    assert not expr.holds(float("nan"))
    assert parse_expression("count(c) <= 0", "r").holds(0)


# -- rules ------------------------------------------------------------------------------------


def test_make_rule_options() -> None:
    rule = make_rule("slow-api", 'p95(http.latency{route="/users"}) > 250', window="1m",
                     for_="2m", keep_firing_for="30s", severity="critical", group="api",
                     labels={"team": "web"}, by="method", tags={"host": "a"},
                     summary="p95 {value:.0f} ms on {labels[route]}")
    assert rule.window_s == 60 and rule.for_s == 120 and rule.keep_firing_for_s == 30
    assert rule.expr is not None
    assert rule.expr.by == ("method",)
    assert rule.expr.filters == (("route", "/users"), ("host", "a"))
    with pytest.raises(RuleError, match=r"quote values like \"/users\""):
        make_rule("slow-api", "p95(http.latency{route=/users}) > 250")
    assert rule.group == "api" and rule.metric == "http.latency" and rule.kind == "threshold"
    anomaly = make_rule("lat", anomaly="http.latency", min_severity="high", stat="p95")
    assert anomaly.kind == "anomaly" and anomaly.window_s == 60.0
    assert anomaly.anomaly is not None and anomaly.anomaly.min_severity == "high"
    assert make_rule("x", "rate(c) > 1").group == "x"  # the group defaults to the rule


@pytest.mark.parametrize(
    ("kwargs", "words", "field"),
    [
        ({"expr": "p95(h) > 1", "for_": "2x"}, "bad for", "for"),
        ({"expr": "p95(h) > 1", "keep_firing_for": "-1m"}, "bad keep_firing_for", None),
        ({"expr": "p95(h) > 1", "window": "0s"}, "bad window", "window"),
        ({"expr": "p95(h) > 1", "anomaly": "h"}, "not both", "expr"),
        ({}, "neither", "expr"),
        ({"expr": "p95(h) > 1", "labels": {"severity": "x"}}, "set by holter", "labels"),
        ({"expr": "p95(h) > 1", "severity": "very bad"}, "bad severity", "severity"),
        ({"expr": "p95(h) > 1", "summary": "{valu}"}, "unknown field {valu}", "summary"),
        ({"expr": "p95(h) > 1", "summary": "{value:.0q}"}, "bad summary template", "summary"),
        ({"anomaly": "h", "min_severity": "huge"}, "bad min_severity", "min_severity"),
        ({"anomaly": "h", "by": ["x"]}, "threshold rules only", "by"),
        ({"expr": "p95(h) > 1", "actions": ["reboot"]}, "unknown action", "actions"),
    ],
)
def test_bad_rule_options_name_the_rule_and_field(kwargs, words, field) -> None:
    with pytest.raises(RuleError) as info:
        make_rule("my-rule", **kwargs)
    assert str(info.value).startswith("rule 'my-rule': ")
    assert words in str(info.value)
    if field is not None:
        assert info.value.field_name == field


def test_bad_rule_names() -> None:
    for name in ("", "has space", "-dash", "x" * 200):
        with pytest.raises(RuleError, match="bad rule name"):
            make_rule(name, "rate(c) > 1")


def test_durations() -> None:
    assert parse_duration("1h30m", rule="r", what="for") == 5400
    assert parse_duration("500ms", rule="r", what="for") == 0.5
    assert parse_duration(0, rule="r", what="for") == 0
    with pytest.raises(RuleError) as info:
        parse_duration("1h30x", rule="r", what="for")
    assert info.value.position == 4
    assert "'1h30x'" in str(info.value)


# -- rules files -------------------------------------------------------------------------------


GOOD = """
[alerting]
group_wait = "10s"
group_by = ["alertgroup", "route"]

[[notifiers]]
type = "webhook"
url = "https://user:pa55@hooks.example.com/services/T0/B0/SECRETPATH?token=QUERYSECRET"
headers = { Authorization = "Bearer HEADERSECRET" }

[[notifiers]]
type = "alertmanager"
url = "http://127.0.0.1:9093"

[[notifiers]]
type = "stderr"

[[rules]]
name = "slow-api"
expr = "p95(http.latency) by (route) > 250"
for = "2m"
keep_firing_for = "1m"
summary = "p95 {value:.0f} ms on {labels[route]}"

[[rules]]
name = "latency-anomaly"
anomaly = "http.latency"
min_severity = "high"

[[rules]]
name = "mem"
expr = "last(process.memory.rss) > 5e8"
actions = ["gc", "throttle"]

[[inhibit]]
source = { severity = "critical" }
target = { severity = "warning" }
equal = ["route"]
"""

BAD = """[alerting]
group_wait = "soon"

[[notifiers]]
type = "webhook"
url = "ftp://files.example.com/SECRETPATH"

[[rules]]
name = "slow-api"
expr = "p95(http.latency) >> 250"

[[rules]]
name = "errors"
expr = "rate(http.requests) > 1"
for = "2x"

[[rules]]
name = "slow-api"
expr = "p95(x) > 1"

[[rules]]
name = "mem"
expr = "last(rss) > 1"
colour = "red"
"""


def test_good_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "holter.toml"
    path.write_text(GOOD)
    found = load_rules_file(path)
    assert [r.name for r in found.rules] == ["slow-api", "latency-anomaly", "mem"]
    assert found.rules[0].for_s == 120 and found.rules[0].source == f"{path}:18"
    assert [type(n).__name__ for n in found.notifiers] == [
        "WebhookNotifier", "AlertmanagerNotifier", "LogNotifier"]
    settings = make_settings(found.settings)
    assert settings.group_wait_s == 10 and settings.group_by == ("alertgroup", "route")
    assert settings.inhibit[0].equal == ("route",)
    shown = " ".join(n.describe() for n in found.notifiers)
    for secret in ("SECRETPATH", "QUERYSECRET", "HEADERSECRET", "pa55", "user"):
        assert secret not in shown
    assert "https://hooks.example.com/…" in shown


def test_bad_rules_file_reports_every_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(BAD)
    found = check_rules_file(path)
    messages = "\n".join(p.format(str(path)) for p in found.errors)
    assert any(p.line == 2 and "group_wait = 'soon'" in p.message for p in found.errors), messages
    assert any(p.line == 6 and "http://" in p.message for p in found.errors), messages
    assert any(p.line == 10 and "position 20" in p.message for p in found.errors), messages
    assert any(p.line == 15 and "bad for" in p.message for p in found.errors), messages
    assert any(p.line == 18 and "defined twice (first at line 9)" in p.message
               for p in found.errors), messages
    assert any(p.line == 24 and "unknown key 'colour'" in p.message for p in found.errors)
    assert "SECRETPATH" not in messages
    assert len(found.errors) == 6
    with pytest.raises(RulesFileError) as info:
        load_rules_file(path)
    assert f"{path}:10" in str(info.value)


def test_toml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "x"\nexpr = "p95(h) > 1\n')
    found = check_rules_file(path)
    assert found.errors and found.errors[0].line == 3
    assert "not valid TOML" in found.errors[0].message


def test_missing_rules_file(tmp_path: Path) -> None:
    found = check_rules_file(tmp_path / "none.toml")
    assert found.errors and "cannot read" in found.errors[0].message


# -- notifier configuration -------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "ftp://hooks.example.com/T0/SECRET", "file:///etc/SECRET", "hooks.example.com/SECRET",
    "javascript:alert(1)", "http:///SECRET", "",
])
def test_webhook_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        WebhookNotifier(url)
    assert "SECRET" not in str(info.value)


def test_bad_webhook_is_rejected_when_the_monitor_is_configured(db_path: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://") as info, \
            holter.testing.monitor(db=db_path, webhook="ftp://example.com/T0/SECRET"):
        pass
    assert "SECRET" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown notifier type"), holter.testing.monitor(
        db=db_path, notifiers=[{"type": "carrier-pigeon"}]
    ):
        pass


def test_rules_file_errors_stop_the_monitor_from_starting(tmp_path: Path, db_path: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(BAD)
    with pytest.raises(RulesFileError, match="position 20"), holter.testing.monitor(
        db=db_path, rules=str(path)
    ):
        pass


def test_mask_url_hides_credentials_path_and_query() -> None:
    assert mask_url("https://u:p@hooks.example.com:8443/T0/B0/XYZ?k=v") == \
        "https://hooks.example.com:8443/…"
    assert mask_url("http://127.0.0.1:9093") == "http://127.0.0.1:9093"
    hook = WebhookNotifier("https://u:secret@example.com/a/b", headers={"X-Key": "k3y"})
    assert "secret" not in repr(hook) and "k3y" not in repr(hook) and "X-Key" in repr(hook)
    assert hook._headers["Authorization"].startswith("Basic ")


def test_make_notifier_specs() -> None:
    assert make_notifier("log").kind == "log"
    assert make_notifier("stderr").stream == "stderr"  # type: ignore[attr-defined]
    assert make_notifier("https://example.com/x").kind == "webhook"
    assert make_notifier(print).kind == "python"
    am = make_notifier({"type": "alertmanager", "url": "http://127.0.0.1:9093/",
                        "resend_interval": "30s"})
    assert isinstance(am, AlertmanagerNotifier)
    assert am._url == "http://127.0.0.1:9093/api/v2/alerts" and am.resend_interval_s == 30
    fn = make_notifier({"type": "python", "target": "json:dumps"})
    assert fn.kind == "python"
    with pytest.raises(ConfigError, match="cannot be imported"):
        make_notifier({"type": "python", "target": "no.such.module:fn"})
    with pytest.raises(ConfigError, match="timeout"):
        make_notifier({"type": "webhook", "url": "http://x", "timeout": "soon"})
