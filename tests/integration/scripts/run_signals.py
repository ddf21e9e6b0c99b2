"""Count the signals it is sent (test_run_signals), under ``holter run`` or directly.

    run_signals.py LOG [--to-my-group] SIGNAL [SIGNAL...]

Appends JSON lines to LOG (never to stdout, which may be a terminal that hung up):
``{"ready": pid, "ppid": ..., "mask": {...}}`` once its handlers are in place (``mask``:
the SigBlk/SigIgn/SigCgt lines of /proc/self/status, when there is one), then
``{"got": NAME, "count": n}`` each time one of the named signals arrives. SIGINT is
counted as the KeyboardInterrupt it raises (caught each time); the others by a handler.
SIGTERM ends it: it logs ``{"end": {NAME: count}}`` and exits with status
``10 + count of the first named signal`` (11 when it got exactly one). With
``--to-my-group`` it sends the first named signal to its own process group once ready
(``kill 0``, as shell scripts do to clean up), then takes each copy with
``sigwaitinfo`` (so that it is not merged with the next) and logs its sender as ``from``.
"""

import json
import os
import signal
import sys
import time

log_path = sys.argv[1]
to_my_group = sys.argv[2:3] == ["--to-my-group"]
names = sys.argv[3:] if to_my_group else sys.argv[2:]
counts = dict.fromkeys(names, 0)
ending = False


def log(**record: object) -> None:
    with open(log_path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def got(name: str, **more: object) -> None:
    counts[name] += 1
    log(got=name, count=counts[name], **more)


def on_signal(signum: int, _frame: object) -> None:
    got(signal.Signals(signum).name)


def on_term(_signum: int, _frame: object) -> None:
    global ending
    ending = True


def mask() -> dict[str, str]:
    try:
        with open("/proc/self/status") as fh:
            lines = [ln.split(":", 1) for ln in fh if ln.startswith(("SigBlk", "SigIgn", "SigCgt"))]
    except OSError:
        return {}
    return {k: v.strip() for k, v in lines}


for name in names:
    if name != "SIGINT":
        signal.signal(signal.Signals[name], on_signal)
signal.signal(signal.SIGTERM, on_term)
log(ready=os.getpid(), ppid=os.getppid(), mask=mask())
if to_my_group:
    sig = signal.Signals[names[0]]
    signal.pthread_sigmask(signal.SIG_BLOCK, {sig, signal.SIGTERM})
    os.kill(0, sig)
    while not ending:
        info = signal.sigwaitinfo({sig, signal.SIGTERM})
        if info.si_signo == signal.SIGTERM:
            ending = True
        else:
            got(sig.name, sender=info.si_pid)
while not ending:
    try:
        time.sleep(0.02)
    except KeyboardInterrupt:
        got("SIGINT")
log(end=counts)
sys.exit(10 + counts[names[0]])
