"""Rules files in real processes: `holter run --rules FILE` and `./holter.toml` picked up by
`holter.start()`, notifying a real webhook receiver; state kept across the processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import alerting_support as sup

SCRIPT = """
import time
import holter
mon = holter.get_monitor() or holter.start(app="svc", flush_interval="100ms")
mon.gauge("temp").set(float(__import__("sys").argv[1]), room="a")
time.sleep(0.6)
"""


def rules_file(path: Path, hook_url: str) -> Path:
    path.write_text(f"""
[alerting]
group_wait = "0s"
group_interval = "1ms"

[[notifiers]]
type = "webhook"
url = "{hook_url}"

[[rules]]
name = "hot"
expr = "last(temp) by (room) > 50"
window = "1h"
summary = "room {{labels[room]}} at {{value:.0f}}"
""")
    return path


def run(args: list[str], cwd: Path,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HOLTER_")}
    environment.update(env or {})
    return subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=120, check=False)


def test_holter_run_with_a_rules_file(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SCRIPT)
    db = str(tmp_path / "x.db")
    with sup.Receiver() as hook:
        rules = rules_file(tmp_path / "alerts.toml", hook.url)
        done = run([sys.executable, "-m", "holter", "run", "--db", db, "--interval", "100ms",
                    "--rules", str(rules), "--", "python", "app.py", "80"], tmp_path)
        assert done.returncode == 0, done.stderr
        bodies = sup.wait_for(hook.bodies, 10)
        assert bodies, done.stderr
        assert bodies[0]["status"] == "firing"
        assert bodies[0]["alerts"][0]["annotations"]["summary"] == "room a at 80"

        # the next run finds the alert firing: no second "firing" notification; it resolves
        done = run([sys.executable, "-m", "holter", "run", "--db", db, "--interval", "100ms",
                    "--rules", str(rules), "--", "python", "app.py", "10"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert sup.wait_for(lambda: len(hook.bodies()) >= 2, 10)
        statuses = [b["status"] for b in hook.bodies()]
        assert statuses == ["firing", "resolved"]
    listed = run([sys.executable, "-m", "holter", "alerts", "--db", db, "--json"], tmp_path)
    (alert,) = json.loads(listed.stdout)
    assert alert["rule"] == "hot" and alert["state"] == "resolved"


def test_holter_toml_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SCRIPT)
    with sup.Receiver() as hook:
        rules_file(tmp_path / "holter.toml", hook.url)
        done = run([sys.executable, "app.py", "99"], tmp_path,
                   {"HOLTER_DB": str(tmp_path / "y.db")})
        assert done.returncode == 0, done.stderr
        bodies = sup.wait_for(hook.bodies, 10)
        assert bodies and bodies[0]["alerts"][0]["labels"]["alertname"] == "hot"


def test_a_bad_rules_file_fails_start_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SCRIPT)
    (tmp_path / "holter.toml").write_text('[[rules]]\nname = "x"\nexpr = "p95(lat) > fast"\n')
    done = run([sys.executable, "app.py", "99"], tmp_path, {"HOLTER_DB": str(tmp_path / "z.db")})
    assert done.returncode == 1
    assert "holter.toml:3" in done.stderr and "expected a number after '>'" in done.stderr
