"""`holter alerts`, `holter silence`, `holter silences` and `holter rules check` over a real
store: listings, JSON, silences obeyed by a running monitor, rules-file checking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import holter.testing
from holter.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def make_monitor(db: str, inbox: list) -> holter.testing.monitor:  # type: ignore[valid-type]
    mon_cm = holter.testing.monitor(db=db, notifiers=[inbox.append],
                                    alerting={"group_wait": 0, "group_interval": "1ms"})
    return mon_cm


@pytest.fixture
def alerted(db_path: str) -> str:
    inbox: list = []
    with make_monitor(db_path, inbox) as mon:
        mon.alert("hot", "last(temp) by (room) > 50", window="1h", severity="critical",
                  summary="room {labels[room]} at {value:.0f}")
        mon.alert("cold", "last(temp) by (room) < 30", window="1h", for_="1h")
        mon.alert("blip", "max(spike) > 1", window="1h")
        temp = mon.gauge("temp")
        temp.set(60, room="a")
        temp.set(20, room="b")
        mon.histogram("spike").observe(5)
        mon.flush()
        mon.alerting.wait_idle(10)
        mon.alert("blip", "max(spike) > 1000", window="1h")  # now it resolves
        mon.flush()
        mon.alerting.wait_idle(10)
    return db_path


def test_alerts_json_and_states(alerted: str) -> None:
    result = run("alerts", "--db", alerted, "--json")
    assert result.exit_code == 0, result.output
    found = {(a["rule"], a["state"]) for a in json.loads(result.output)}
    assert found == {("hot", "firing"), ("cold", "pending"), ("blip", "resolved")}
    result = run("alerts", "--db", alerted, "--json", "--state", "firing")
    (hot,) = json.loads(result.output)
    assert hot["labels"] == {"alertname": "hot", "alertgroup": "hot", "severity": "critical",
                             "room": "a"}
    assert hot["annotations"]["summary"] == "room a at 60"
    assert hot["value"] == 60.0 and hot["fired_ns"] >= hot["active_ns"]
    result = run("alerts", "--db", alerted, "--json", "--rule", "cold")
    assert [a["rule"] for a in json.loads(result.output)] == ["cold"]


def test_alerts_table_and_events(alerted: str) -> None:
    result = run("alerts", "--db", alerted)
    assert result.exit_code == 0, result.output
    for text in ("3 alerts", "hot", "firing", "critical", "room=a", "room a at 60", "pending",
                 "resolved"):
        assert text in result.output
    result = run("alerts", "--db", alerted, "--events", "--json")
    kinds = [e["kind"] for e in reversed(json.loads(result.output))]
    assert kinds.count("firing") == 2 and "resolved" in kinds and "notified" in kinds
    result = run("alerts", "--db", alerted, "--events", "--rule", "blip")
    assert "resolved" in result.output and "hot" not in result.output


def test_silence_is_obeyed_by_a_running_monitor(alerted: str) -> None:
    result = run("silence", "hot", "--tag", "room=a", "--for", "30m", "--comment",
                 "deploying", "--db", alerted, "--json")
    assert result.exit_code == 0, result.output
    silence = json.loads(result.output)
    assert silence["rule"] == "hot" and silence["matchers"] == {"room": "a"}
    assert silence["ends_ns"] - silence["starts_ns"] == 30 * 60 * 10**9
    listed = json.loads(run("silences", "--db", alerted, "--json").output)
    assert [s["id"] for s in listed] == [silence["id"]]
    table = run("silences", "--db", alerted).output
    assert "deploying" in table and "room=a" in table and "active" in table

    inbox: list = []
    with make_monitor(alerted, inbox) as mon:
        mon.alert("hot", "last(temp) by (room) > 50", window="1h", severity="critical")
        mon.gauge("temp").set(70, room="a")
        mon.flush()
        mon.alerting.wait_idle(10)
        (alert,) = mon.alerts(state="firing")
        assert alert.muted == f"silenced:{silence['id']}"

    result = run("silences", "--expire", str(silence["id"]), "--db", alerted)
    assert result.exit_code == 0 and f"silence {silence['id']} ended" in result.output
    assert json.loads(run("silences", "--db", alerted, "--json").output) == []
    assert len(json.loads(run("silences", "--all", "--db", alerted, "--json").output)) == 1


def test_silence_of_an_unknown_rule_notes_it(alerted: str) -> None:
    result = run("silence", "no-such-rule", "--db", alerted)
    assert result.exit_code == 0
    assert "no alert of rule 'no-such-rule'" in result.stderr
    result = run("silence", "*", "--for", "1h30m", "--db", alerted)
    assert result.exit_code == 0 and "every rule" in result.output


@pytest.mark.parametrize("args", [
    ["alerts", "--since", "soon"],
    ["silence", "hot", "--for", "0s"],
    ["silence", "hot", "--tag", "room"],
    ["silences", "--expire", "999"],
])
def test_bad_input_is_a_one_line_error(alerted: str, args: list[str]) -> None:
    result = run(*args, "--db", alerted)
    assert result.exit_code == 2
    assert result.output.startswith("holter: error: ")
    assert len(result.output.strip().splitlines()) == 1


def test_missing_store_is_a_one_line_error(tmp_path: Path) -> None:
    result = run("alerts", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 2 and "no holter store" in result.output


# -- rules check -------------------------------------------------------------------------------


RULES = """
[[notifiers]]
type = "webhook"
url = "https://hooks.example.com/services/T0/B0/SECRETPATH"
headers = { Authorization = "Bearer HEADERSECRET" }

[[rules]]
name = "hot"
expr = "last(temp) > 50"

[[rules]]
name = "not-yet"
expr = "p95(http.latency) > 250"
"""


def test_rules_check_good_file_warns_about_metrics_not_recorded(alerted: str,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "holter.toml"
    path.write_text(RULES)
    result = run("rules", "check", str(path), "--db", alerted)
    assert result.exit_code == 0, result.output
    assert "2 rules" in result.output
    assert "metric 'http.latency' is not recorded" in result.stderr
    assert "'hot'" not in result.stderr  # temp is recorded
    everything = result.output + result.stderr
    assert "https://hooks.example.com/…" in everything
    assert "SECRETPATH" not in everything and "HEADERSECRET" not in everything
    data = json.loads(run("rules", "check", str(path), "--db", alerted, "--json").output)
    assert data["ok"] and [r["name"] for r in data["rules"]] == ["hot", "not-yet"]
    assert any("http.latency" in p["message"] for p in data["problems"])
    assert "SECRETPATH" not in json.dumps(data)


def test_rules_check_bad_file_exits_2_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "a"\nexpr = "p95(x) > "\n\n[[rules]]\nname = "b"\n'
                    'expr = "rate(y) > 1"\nfor = "soon"\n')
    result = run("rules", "check", str(path), "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 2
    assert f"{path}:3: error: rule 'a': expected a number after '>'" in result.stderr
    assert f"{path}:8: error: rule 'b': bad for" in result.stderr
    assert "^" in result.stderr


def test_holter_run_refuses_a_bad_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "a"\nexpr = "p95(x) >> 1"\n')
    result = run("run", "--db", str(tmp_path / "x.db"), "--rules", str(path), "--",
                 "python", "-c", "print('ran')")
    assert result.exit_code == 2
    assert "position" in result.output and "ran" not in result.output
