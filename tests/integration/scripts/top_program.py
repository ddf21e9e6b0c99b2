"""A program watched by ``holter run --top`` or by its own ``mon.dashboard()``.

    top_program.py run         # under `holter run --top`: count until interrupted
    top_program.py dashboard   # start holter (60 s flushes), count in a thread, open
                               # mon.dashboard(), then print the flush interval after it
                               # and whether its own SIGTERM handler is still in place
"""

import signal
import sys
import threading
import time

import holter

if sys.argv[1] == "run":
    mon = holter.get_monitor()
    ticks = mon.counter("program.ticks")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ticks.inc()
        print("tick", flush=True)
        time.sleep(0.05)
    sys.exit(3)

def on_term(_signum: int, _frame: object) -> None:
    """The program's own SIGTERM handler: the dashboard must leave it in place."""


signal.signal(signal.SIGTERM, on_term)
mon = holter.start(app="self-watch", db=sys.argv[2], flush_interval=60.0)
ticks = mon.counter("program.ticks")
stop = threading.Event()


def work() -> None:
    while not stop.wait(0.05):
        ticks.inc()


threading.Thread(target=work, daemon=True).start()
mon.dashboard(refresh_s=0.3)
stop.set()
print(f"dashboard closed; flush interval {mon.collector.interval_s}; "
      f"own SIGTERM handler kept: {signal.getsignal(signal.SIGTERM) is on_term}", flush=True)
