"""``@mon.instrument("tool")``: the program's own operations, as spans and metrics."""

from __future__ import annotations

import asyncio

import pytest

import holter.testing
from holter.store.spans import decode_chunk


def stored_spans(mon) -> list[dict]:
    mon.flush()
    with mon.store.reading() as conn:
        return [s for (blob,) in conn.execute("SELECT data FROM span_chunks ORDER BY id")
                for s in decode_chunk(blob)]


class ToolFailed(Exception):
    pass


def test_sync_operations(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "h.db")) as mon:
        raised: list[BaseException] = []

        @mon.instrument("deploy", env="prod")
        def deploy(target: str, *, fail: bool = False) -> dict:
            """Deploy."""
            if fail:
                raised.append(ToolFailed(target))
                raise raised[-1]
            return {"target": target}

        assert deploy.__name__ == "deploy" and deploy.__doc__ == "Deploy."
        result = deploy("web")
        assert result == {"target": "web"}
        with pytest.raises(ToolFailed) as info:
            deploy("db", fail=True)
        assert info.value is raised[0]  # the very object, unchained
        assert info.value.__context__ is None and info.value.__cause__ is None
        for _ in range(3):
            deploy("x")

        assert mon.query("operation.calls", "1h", tags={"operation": "deploy", "status": "ok"}
                         ).count == 4
        assert mon.query("operation.calls", "1h",
                         tags={"operation": "deploy", "status": "error"}).count == 1
        duration = mon.query("operation.duration", "1h", tags={"operation": "deploy"})
        assert duration.count == 5 and duration.unit == "s"
        spans = [s for s in stored_spans(mon) if s["name"] == "deploy"]
        assert len(spans) == 5
        assert {s["status"] for s in spans} == {"ok", "error"}
        failed = next(s for s in spans if s["status"] == "error")
        assert failed["error_type"].endswith("ToolFailed")
        assert all(s["tags"].get("env") == "prod" for s in spans)


def test_async_operations_and_nesting(tmp_path) -> None:
    with holter.testing.monitor(db=str(tmp_path / "h.db")) as mon:
        @mon.instrument("fetch")
        async def fetch(n: int) -> int:
            await asyncio.sleep(0)
            if n < 0:
                raise ValueError(n)
            return n * 2

        @mon.instrument("batch")
        async def batch() -> list[int]:
            return list(await asyncio.gather(fetch(1), fetch(2)))

        assert asyncio.run(batch()) == [2, 4]
        with pytest.raises(ValueError, match="-1"):
            asyncio.run(fetch(-1))
        assert mon.query("operation.calls", "1h", tags={"operation": "fetch"}).count == 3
        spans = stored_spans(mon)
        root = next(s for s in spans if s["name"] == "batch")
        children = [s for s in spans if s["name"] == "fetch" and s["parent_id"] == root["span_id"]]
        assert len(children) == 2
        assert all(c["trace_id"] == root["trace_id"] for c in children)
