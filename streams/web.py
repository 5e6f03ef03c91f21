"""The worker's HTTP API, served by Faust's web server in the worker process.

| route | answer |
|---|---|
| `POST /v1/events` | the collector (`streams.collector`): per event accepted or rejected, 400 if all were |
| `GET /v1/visitors/{visitor_id}` | the visitor as served from Redis; 404 for an unknown visitor |
| `GET /v1/segments` | the definitions' segments with their member counts |
| `GET /v1/report` | segment sizes and KPIs read back from ClickHouse |
| `GET /v1/status` | owned partitions, profiles, lag, timers, the engine's counters, GC |
| `GET /healthz` | `{"ok": true, "ready": ...}` (`Runtime.ready`) |

`register_views(app, runtime)` adds them to a Faust app, bound to that worker's `Runtime`. This
module imports Faust's web layer, so `streams.app` imports it only once Faust is loaded (start-up
loads Faust while the consumer joins its group).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, cast

import orjson
from faust.web import Request, Response, View

from streams import gcstats
from streams.collector import parse_body, route_items
from streams.runtime import Runtime

if TYPE_CHECKING:
    import faust


class WorkerView(View):
    """A view of one worker: `runtime` is set on the subclass `register_views` registers."""

    runtime: ClassVar[Runtime]

    def answer(self, value: Any, status: int = 200) -> Response:
        """`value` as a JSON response (orjson)."""
        return self.bytes(orjson.dumps(value), content_type="application/json", status=status)


class EventsView(WorkerView):
    """Collector: one event, a JSON array, or a Segment-style batch; answers per event."""

    async def post(self, request: Request) -> Response:
        rt = self.runtime
        body = await request.read()
        received_at = datetime.now(UTC)
        items = parse_body(body, received_at, rt.settings.max_event_bytes)
        routed = route_items(
            items,
            events_topic=rt.settings.events_topic,
            dlq_topic=rt.settings.dlq_topic,
            received_at=received_at,
        )
        producer = await rt.engine.start_producer()
        acks = [await producer.send(topic, value, key=key) for topic, key, value in routed.records]
        if acks:
            await asyncio.gather(*acks)
        return self.answer(routed.answer, status=routed.status)


class VisitorView(WorkerView):
    async def get(self, request: Request, visitor_id: str) -> Response:
        found = await self.runtime.serving.get_visitor(visitor_id)
        if found is None:
            return self.answer({"error": "unknown visitor", "visitor_id": visitor_id}, status=404)
        return self.answer(found)


class SegmentsView(WorkerView):
    async def get(self, request: Request) -> Response:
        rt = self.runtime
        counts = await rt.serving.segment_counts()
        segments = [
            {"id": seg.id, "description": seg.description, "members": counts.get(seg.id, 0)}
            for seg in rt.defs.segments
        ]
        return self.answer({"definition_version": rt.defs.version, "segments": segments})


class ReportView(WorkerView):
    """Segment sizes and KPIs read back from ClickHouse (chDB lives in this process)."""

    async def get(self, request: Request) -> Response:
        rows, totals = await asyncio.to_thread(self.runtime.analytics.report)
        return self.answer({"segments": [dataclasses.asdict(r) for r in rows], "totals": totals})


class StatusView(WorkerView):
    async def get(self, request: Request) -> Response:
        rt = self.runtime
        engine = rt.engine
        return self.answer(
            {
                "time": time.time(),
                "partitions": sorted(engine.store.partitions),
                "profiles": len(engine.store),
                "definition_version": rt.defs.version,
                "lag": await engine.lag(),
                "timers": engine.timers(),
                **engine.stats.as_dict(),
                "gc": gcstats.snapshot(),
            }
        )


class HealthView(WorkerView):
    async def get(self, request: Request) -> Response:
        return self.answer({"ok": True, "ready": self.runtime.ready})


ROUTES: tuple[tuple[str, type[WorkerView]], ...] = (
    ("/v1/events", EventsView),
    ("/v1/visitors/{visitor_id}", VisitorView),
    ("/v1/segments", SegmentsView),
    ("/v1/report", ReportView),
    ("/v1/status", StatusView),
    ("/healthz", HealthView),
)


def register_views(app: faust.App, runtime: Runtime) -> None:
    """Add every route of `ROUTES` to `app`, each view bound to `runtime`."""
    for path, view in ROUTES:
        bound = type(view.__name__, (view,), {"runtime": runtime, "__doc__": view.__doc__})
        app.page(path)(cast(type[WorkerView], bound))
