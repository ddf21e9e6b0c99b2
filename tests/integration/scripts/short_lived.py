"""A short-lived program that never calls flush or stop (test_processes).

    short_lived.py MODE DB

Records a counter (+5) and a histogram observation, then: MODE ``normal`` returns,
``exit3`` calls ``sys.exit(3)``, ``exit_text`` calls ``sys.exit("bad input")``,
``raise`` dies of an uncaught ValueError. The data must reach the store at exit.
"""

import sys

import holter

mode, db = sys.argv[1:3]
mon = holter.start(app=f"short-{mode}", db=db)
mon.counter("x").inc(5)
mon.histogram("h", unit="ms").observe(12.5)

if mode == "exit3":
    sys.exit(3)
if mode == "exit_text":
    sys.exit("bad input")
if mode == "raise":
    raise ValueError("boom")
