"""Ends with a span still open, for the test that holter stores it as unfinished.

Usage: ``python tracing_unfinished.py DB MODE``; MODE is ``normal`` (fall off the end
of the script), ``exit`` (``sys.exit(3)``) or ``raise`` (an uncaught exception inside
the span). Prints the trace id first.
"""

from __future__ import annotations

import sys
import time

import holter


def main() -> None:
    mon = holter.start(app="tracing-unfinished", db=sys.argv[1])
    mode = sys.argv[2]
    job = mon.span("job", mode=mode)
    print(job.trace_id_hex, flush=True)
    with mon.span("job.step", context=job):
        time.sleep(0.002)
    if mode == "raise":
        with job:
            raise RuntimeError("fatal in job")
    job.__enter__()  # left open: the interpreter exits inside it
    time.sleep(0.002)
    if mode == "exit":
        sys.exit(3)


if __name__ == "__main__":
    main()
