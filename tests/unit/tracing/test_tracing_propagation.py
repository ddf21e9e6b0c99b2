"""The current span follows the program: asyncio tasks, thread pools and threads.

The standard library carries contextvars into asyncio tasks but not into threads;
holter carries its own current span into threads and pool tasks started inside a
span, with no code in the program, and can be switched off.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import holter
from holter.core import tracing
from holter.store import query as q

JOIN_S = 10.0


def run_thread(thread: threading.Thread) -> None:
    thread.start()
    thread.join(JOIN_S)
    assert not thread.is_alive()


# -- asyncio ----------------------------------------------------------------------------


def test_current_span_follows_create_task_gather_and_taskgroup(mon) -> None:
    async def leaf(label: str):
        seen = holter.current_span()
        await asyncio.sleep(0)
        with mon.span(f"leaf.{label}") as span:
            await asyncio.sleep(0)
            assert holter.current_span() is span
        return seen, span

    async def main():
        with mon.span("root") as root:
            task = asyncio.create_task(leaf("task"))
            results = [await task]
            results += await asyncio.gather(leaf("gather.1"), leaf("gather.2"))
            async with asyncio.TaskGroup() as group:
                tg = [group.create_task(leaf(f"group.{i}")) for i in range(2)]
            results += [t.result() for t in tg]
            assert holter.current_span() is root
        return root, results

    root, results = asyncio.run(main())
    assert len(results) == 5
    for seen, span in results:
        assert seen is root
        assert span.trace_id == root.trace_id
        assert span.parent_id == root.span_id
    mon.flush()
    rows = q.trace(mon.store, root.trace_id_hex)
    assert len(rows) == 6
    assert {r["parent_id"] for r in rows if r["name"] != "root"} == {root.span_id_hex}


def test_task_created_in_a_span_keeps_it_after_the_span_ends(mon) -> None:
    async def later():
        await asyncio.sleep(0.01)
        with mon.span("background") as span:
            return span

    async def main():
        with mon.span("request") as request:
            task = asyncio.create_task(later())
        assert holter.current_span() is None
        outside = asyncio.create_task(later())
        return request, await task, await outside

    request, background, unrelated = asyncio.run(main())
    assert background.parent_id == request.span_id
    assert unrelated.parent_id is None
    assert unrelated.trace_id != request.trace_id


# -- thread pools -----------------------------------------------------------------------


def test_thread_pool_tasks_get_the_submitting_span(mon) -> None:
    def job(i: int):
        seen = holter.current_span()
        with mon.span("job", i=i) as span:
            return seen, span

    with ThreadPoolExecutor(max_workers=3) as pool:
        with mon.span("batch") as batch:
            results = list(pool.map(job, range(6)))
            results.append(pool.submit(job, 6).result(JOIN_S))
        with mon.span("second.batch") as second:
            again = pool.submit(job, 7).result(JOIN_S)
    for seen, span in results:
        assert seen is batch
        assert span.parent_id == batch.span_id
        assert span.trace_id == batch.trace_id
    assert again[0] is second
    assert again[1].parent_id == second.span_id
    mon.flush()
    rows = q.trace(mon.store, batch.trace_id_hex)
    assert sorted(r["tags"].get("i", -1) for r in rows) == [-1, 0, 1, 2, 3, 4, 5, 6]


def test_run_in_executor_gets_the_current_span(mon) -> None:
    def blocking():
        return holter.current_span()

    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1) as pool, mon.span("io") as span:
            seen = await loop.run_in_executor(pool, blocking)
        return span, seen

    span, seen = asyncio.run(main())
    assert seen is span


def test_pool_workers_do_not_leak_a_span_into_later_tasks(mon) -> None:
    def job():
        with mon.span("job") as span:
            return span

    with ThreadPoolExecutor(max_workers=1) as pool:
        with mon.span("first.request") as first:
            inside = pool.submit(job).result(JOIN_S)
        assert inside.parent_id == first.span_id
        assert holter.current_span() is None
        seen = pool.submit(holter.current_span).result(JOIN_S)
        later = pool.submit(job).result(JOIN_S)
    assert seen is None, f"a task submitted outside any span saw {seen!r}"
    assert later.parent_id is None
    assert later.trace_id != first.trace_id


# -- threads ----------------------------------------------------------------------------


def test_thread_started_inside_a_span_gets_it(mon) -> None:
    seen: dict[str, object] = {}

    def target() -> None:
        seen["target.current"] = holter.current_span()
        with mon.span("in.thread") as span:
            seen["target.span"] = span

    class Worker(threading.Thread):
        def run(self) -> None:  # a subclass overriding run, not passing target
            seen["worker.current"] = holter.current_span()
            with mon.span("in.worker") as span:
                seen["worker.span"] = span

    created_outside = threading.Thread(target=lambda: seen.update(late=holter.current_span()))
    with mon.span("spawner") as spawner:
        run_thread(threading.Thread(target=target))
        run_thread(Worker())
        run_thread(created_outside)  # what counts is where it is started
    assert seen["target.current"] is spawner
    assert seen["worker.current"] is spawner
    assert seen["late"] is spawner
    assert seen["target.span"].parent_id == spawner.span_id
    assert seen["worker.span"].parent_id == spawner.span_id
    mon.flush()
    rows = {r["name"]: r for r in q.trace(mon.store, spawner.trace_id_hex)}
    assert rows["in.thread"]["parent_id"] == spawner.span_id_hex
    assert rows["in.worker"]["parent_id"] == spawner.span_id_hex


def test_thread_started_outside_any_span_has_none(mon) -> None:
    seen = {}
    run_thread(threading.Thread(target=lambda: seen.update(current=holter.current_span())))
    assert seen == {"current": None}
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(holter.current_span).result(JOIN_S) is None


def test_a_thread_keeps_the_span_after_the_span_ends(mon) -> None:
    go = threading.Event()
    box = {}

    def target() -> None:
        go.wait(JOIN_S)
        with mon.span("after.parent.ended") as span:
            box["span"] = span

    thread = threading.Thread(target=target)
    with mon.span("short.parent") as parent:
        thread.start()
    go.set()
    thread.join(JOIN_S)
    assert not thread.is_alive()
    assert box["span"].parent_id == parent.span_id
    assert holter.current_span() is None


def test_only_holters_context_variable_is_carried(mon) -> None:
    other: contextvars.ContextVar[str] = contextvars.ContextVar("other", default="unset")
    token = other.set("set in main")
    try:
        seen = {}
        with mon.span("carrier") as span:
            run_thread(threading.Thread(
                target=lambda: seen.update(other=other.get(), span=holter.current_span())))
        assert seen == {"other": "unset", "span": span}
    finally:
        other.reset(token)


def test_propagation_can_be_switched_off_and_on(mon) -> None:
    def observe() -> object:
        box = {}
        run_thread(threading.Thread(target=lambda: box.update(current=holter.current_span())))
        with ThreadPoolExecutor(max_workers=1) as pool:
            in_pool = pool.submit(holter.current_span).result(JOIN_S)
        return box["current"], in_pool

    try:
        tracing.disable_thread_propagation()
        with mon.span("quiet"):
            assert observe() == (None, None)
    finally:
        tracing.install_thread_propagation()
    with mon.span("loud") as loud:
        assert observe() == (loud, loud)
