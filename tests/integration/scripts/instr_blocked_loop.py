"""An asyncio program that is healthy for a while, then blocks its loop (test_runtime).

    instr_blocked_loop.py DB

Records with runtime metrics on: first 0.3 s of well-behaved awaiting, then one
handler that calls ``time.sleep(0.4)`` inside a coroutine (the line marked BLOCKS), then
a little more awaiting so the loop comes round and the stall is recorded.
"""

import asyncio
import sys
import time

import holter

mon = holter.start(app="blocked-loop", db=sys.argv[1], runtime=True, flush_interval=60)


async def healthy() -> None:
    for _ in range(6):
        await asyncio.sleep(0.05)


async def handler() -> None:
    await asyncio.sleep(0.01)
    time.sleep(0.4)  # BLOCKS
    await asyncio.sleep(0.01)


async def main() -> None:
    await healthy()
    await asyncio.gather(handler(), healthy())
    await asyncio.sleep(0.2)


asyncio.run(main())
print("done", flush=True)
