"""The worker's HTTP API, served by Faust's web server in the worker process.

| route | answer |
|---|---|
| `POST /v1/events` | the collector (`streams.collector`): per event accepted or rejected, 400 if all were |
| `GET /v1/visitors/{visitor_id}` | the visitor as served from Redis; 404 for an unknown visitor |
| `GET /v1/segments` | the definitions' segments with their member counts |
| `GET /v1/report` | segment sizes and KPIs read back from ClickHouse |
| `GET /v1/status` | owned partitions, profiles, lag, timers, the running definitions version, counters, GC |
| `GET /healthz` | `{"ok": true, "ready": ...}` (`Runtime.ready`) |
| `GET /v1/definitions` | admin: the head and the history of the definitions topic |
| `POST /v1/definitions` | admin: publish a definitions version (YAML body, or JSON `{text, comment}`) |
| `POST /v1/definitions/preview` | admin: what a version would change, over this worker's profiles |
| `POST /v1/definitions/rollback` | admin: make an earlier version the head again (JSON `{version}`) |
| `GET /v1/definitions/{version}` | admin: one version's record, its text included |

Admin routes need the setting `admin_key` (`TESSERA_ADMIN_KEY`) and the header
`Authorization: Bearer <key>`: without the setting they answer 403, with a missing or wrong key 401
(`DefinitionsAdmin`, which answers them apart from HTTP).

`register_views(app, runtime)` adds them to a Faust app, bound to that worker's `Runtime`. This
module imports Faust's web layer, so `streams.app` imports it only once Faust is loaded (start-up
loads Faust while the consumer joins its group).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, cast

import orjson
from faust.web import Request, Response, View
from pydantic import SecretStr

from schemas.definitions import DefinitionsRecord
from streams import gcstats
from streams.collector import parse_body, route_items
from streams.core.definitions import DefinitionError, Definitions, parse_definitions
from streams.core.segments import Preview
from streams.definitions_store import DefinitionsStore, UnknownVersion, VersionClash, record_path
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
                "definition_switches": engine.definition_switches,
                "lag": await engine.lag(),
                "timers": engine.timers(),
                **engine.stats.as_dict(),
                "gc": gcstats.snapshot(),
            }
        )


class HealthView(WorkerView):
    async def get(self, request: Request) -> Response:
        return self.answer({"ok": True, "ready": self.runtime.ready})


# -- the definitions admin routes -------------------------------------------------------------------

Answer = tuple[int, dict[str, Any]]
"""(HTTP status, JSON body)."""

ADMIN_OFF = (
    "admin routes are off: set TESSERA_ADMIN_KEY on the worker and send Authorization: Bearer <key>"
)


def definitions_body(body: bytes) -> tuple[str, str, str]:
    """(text, comment, applied_by) of a definitions POST: JSON ``{"text", "comment"?, "applied_by"?}``,
    or the YAML text itself. Raises ValueError for a body that is neither."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict) and "text" in value:
        fields = (value["text"], value.get("comment", ""), value.get("applied_by", "http"))
        if not all(isinstance(f, str) for f in fields):
            raise ValueError("text, comment and applied_by must be strings")
        return cast(tuple[str, str, str], fields)
    try:
        return body.decode("utf-8"), "", "http"
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8 text: {exc}") from None


def _refused_file(exc: DefinitionError) -> Answer:
    return 400, {
        "error": {"line": exc.line, "column": exc.column, "reason": exc.message, "path": exc.path}
    }


def _record_summary(record: DefinitionsRecord, head: DefinitionsRecord | None) -> dict[str, Any]:
    summary = record.model_dump(mode="json", exclude={"text"})
    summary["head"] = record == head  # the head is written as a copy of its history entry
    return summary


class DefinitionsAdmin:
    """The answers of the definitions routes, apart from HTTP: each method takes the request's
    `Authorization` header (and body) and returns (status, JSON body). Every route needs the admin
    key (403 when none is set, 401 when it is missing or wrong; compared in constant time)."""

    def __init__(
        self,
        store: DefinitionsStore,
        admin_key: SecretStr | None,
        preview: Callable[[Definitions], Awaitable[tuple[Preview, list[int]]]],
        running: Callable[[], Definitions],
    ) -> None:
        self.store = store
        self.admin_key = admin_key
        self.preview_of = preview
        """Previews definitions over the worker's own profiles (`Engine.preview`)."""
        self.running = running
        """The definitions the worker runs now."""

    def refusal(self, authorization: str | None) -> Answer | None:
        """The answer to a request without the admin key, or None when it carries it."""
        if self.admin_key is None:
            return 403, {"error": {"reason": ADMIN_OFF}}
        scheme, _, token = (authorization or "").partition(" ")
        expected = self.admin_key.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            return 401, {"error": {"reason": "missing or wrong admin key (Authorization: Bearer <key>)"}}
        return None

    async def history(self, authorization: str | None) -> Answer:
        """The head (without its text), the version running here, and every apply and rollback."""
        refused = self.refusal(authorization)
        if refused is not None:
            return refused
        read = await self.store.read()
        head = read.head
        return 200, {
            "head": None if head is None else _record_summary(head, head),
            "running": self.running().version,
            "history": [_record_summary(record, head) for record in read.entries],
        }

    async def version(self, authorization: str | None, version: str) -> Answer:
        """One version's record as first applied, its text included; 404 for an unknown version."""
        refused = self.refusal(authorization)
        if refused is not None:
            return refused
        record = (await self.store.read()).versions.get(version)
        if record is None:
            return 404, {"error": {"reason": str(UnknownVersion(version))}}
        return 200, record.model_dump(mode="json")

    async def apply(self, authorization: str | None, body: bytes) -> Answer:
        """Publish the body's definitions: 200 with the version, 400 with the line, column and
        reason of a refused file, 409 for a version that exists with other content."""
        refused = self.refusal(authorization)
        if refused is not None:
            return refused
        try:
            text, comment, applied_by = definitions_body(body)
            published = await self.store.publish(text, applied_by, comment)
        except DefinitionError as exc:
            return _refused_file(exc)
        except VersionClash as exc:
            return 409, {"error": {"reason": str(exc), "version": exc.version}}
        except ValueError as exc:
            return 400, {"error": {"reason": str(exc)}}
        record = published.record
        return 200, {
            "version": record.version,
            "action": record.action,
            "changed": published.changed,
            "sha256": record.sha256,
        }

    async def preview(self, authorization: str | None, body: bytes) -> Answer:
        """What the body's definitions would change against the running ones, over this worker's
        profiles (`partitions` says which; other workers hold the others)."""
        refused = self.refusal(authorization)
        if refused is not None:
            return refused
        try:
            text, _, _ = definitions_body(body)
            defs = parse_definitions(text, record_path(self.store.topic, "<preview>"))
        except DefinitionError as exc:
            return _refused_file(exc)
        except ValueError as exc:
            return 400, {"error": {"reason": str(exc)}}
        result, partitions = await self.preview_of(defs)
        return 200, {**result.as_dict(), "partitions": partitions}

    async def rollback(self, authorization: str | None, body: bytes) -> Answer:
        """Make the version of the JSON body (``{"version", "comment"?}``) the head again: 404 for an
        unknown version, 400 when this release refuses its text."""
        refused = self.refusal(authorization)
        if refused is not None:
            return refused
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or not isinstance(value.get("version"), str):
            return 400, {"error": {"reason": 'the body must be JSON {"version": "...", "comment": "..."}'}}
        try:
            published = await self.store.rollback(
                value["version"], str(value.get("applied_by", "http")), str(value.get("comment", ""))
            )
        except UnknownVersion as exc:
            return 404, {"error": {"reason": str(exc)}}
        except DefinitionError as exc:
            return _refused_file(exc)
        return 200, {
            "version": published.record.version,
            "action": published.record.action,
            "changed": published.changed,
        }


class AdminView(WorkerView):
    """A definitions route: answered by the worker's `DefinitionsAdmin`."""

    def admin(self) -> DefinitionsAdmin:
        rt = self.runtime
        return DefinitionsAdmin(
            rt.definitions, rt.settings.admin_key, rt.engine.preview, lambda: rt.engine.defs
        )

    def reply(self, answer: Answer) -> Response:
        status, body = answer
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return self.bytes(orjson.dumps(body), content_type="application/json", status=status, headers=headers)


def _authorization(request: Request) -> str | None:
    return cast(str | None, request.headers.get("Authorization"))


class DefinitionsView(AdminView):
    async def get(self, request: Request) -> Response:
        return self.reply(await self.admin().history(_authorization(request)))

    async def post(self, request: Request) -> Response:
        return self.reply(await self.admin().apply(_authorization(request), await request.read()))


class DefinitionsPreviewView(AdminView):
    async def post(self, request: Request) -> Response:
        return self.reply(await self.admin().preview(_authorization(request), await request.read()))


class DefinitionsRollbackView(AdminView):
    async def post(self, request: Request) -> Response:
        return self.reply(await self.admin().rollback(_authorization(request), await request.read()))


class DefinitionVersionView(AdminView):
    async def get(self, request: Request, version: str) -> Response:
        return self.reply(await self.admin().version(_authorization(request), version))


ROUTES: tuple[tuple[str, type[WorkerView]], ...] = (
    ("/v1/events", EventsView),
    ("/v1/visitors/{visitor_id}", VisitorView),
    ("/v1/segments", SegmentsView),
    ("/v1/report", ReportView),
    ("/v1/status", StatusView),
    ("/healthz", HealthView),
    ("/v1/definitions", DefinitionsView),
    # Before `{version}`, which would also match these paths.
    ("/v1/definitions/preview", DefinitionsPreviewView),
    ("/v1/definitions/rollback", DefinitionsRollbackView),
    ("/v1/definitions/{version}", DefinitionVersionView),
)


def register_views(app: faust.App, runtime: Runtime) -> None:
    """Add every route of `ROUTES` to `app`, each view bound to `runtime`."""
    for path, view in ROUTES:
        bound = type(view.__name__, (view,), {"runtime": runtime, "__doc__": view.__doc__})
        app.page(path)(cast(type[WorkerView], bound))
