"""Score holter's streaming detector on the Numenta Anomaly Benchmark (NAB).

Runs the shared evaluator, unchanged, on ``holter.analysis:Detector`` (the class is the
factory; it declares only ``probationary_rows``, so no whole-file lookahead is used) and
prints the standard, low-false-positive and low-false-negative profile scores.

    .venv/bin/python bench/nab_holter.py                       # the public split
    .venv/bin/python bench/nab_holter.py --per-file --json nab.json
    .venv/bin/python bench/nab_holter.py --nab-root /path/to/NAB   # another corpus

Everything after ``--`` goes to the evaluator as is (e.g. ``-- --fixed-threshold 0.4``
shows what holter's own alarm line, the ``low`` severity, earns).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_EVALUATOR = os.path.normpath(os.path.join(REPO, "..", "shared", "tools", "nab",
                                                  "evaluate.py"))
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluator", default=DEFAULT_EVALUATOR,
                    help=f"path of evaluate.py (default {DEFAULT_EVALUATOR})")
    ap.add_argument("--nab-root", help="NAB folder with data/ and labels/ (default: the "
                                       "evaluator's, the public split)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (default 2)")
    ap.add_argument("--per-file", action="store_true", help="a line per file")
    ap.add_argument("--json", metavar="FILE", help="also write the evaluator's JSON here")
    args = ap.parse_args(argv)
    if not os.path.exists(args.evaluator):
        print(f"no NAB evaluator at {args.evaluator}; pass --evaluator PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out_json = args.json or os.path.join(tmp, "nab.json")
        cmd = [sys.executable, args.evaluator, "--detector", "holter.analysis:Detector",
               "--name", "holter", "--jobs", str(args.jobs), "--json", out_json]
        if args.nab_root:
            cmd += ["--nab-root", args.nab_root]
        if args.per_file:
            cmd.append("--per-file")
        cmd += extra
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
        proc = subprocess.run(cmd, env=env, cwd=REPO, text=True, capture_output=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            return proc.returncode
        with open(out_json) as fh:
            result = json.load(fh)
    print("\nholter.analysis:Detector on NAB (normalized, 100 = perfect, 0 = never alarms):")
    for name in PROFILES:
        p = result["profiles"][name]
        print(f"  {name:20s} {p['normalized']:6.2f}   (threshold {p['threshold']:.3g}, "
              f"{p['windows_detected']}/{p['windows_scored']} windows, {p['fp_rows']} FP rows)")
    print(f"  detector time: {1e6 * result['detector_seconds'] / max(result['rows'], 1):.1f} "
          f"us/point over {result['rows']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
