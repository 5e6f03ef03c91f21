"""The worker's HTTP API, served by Faust's web server in the worker process.

| route | answer |
|---|---|
| `POST /v1/batch`, `/v1/events` | the collector (`streams.intake`): per event, 400 if all refused |
| `POST /v1/track` … `/v1/group` | the same, one Segment call (`streams.intake.CALL_ROUTES`) |
| `OPTIONS` of the above and of the inbox | CORS preflight: 204 for an origin some site allows, else 403 |
| `GET /v1/inbox/{visitor_id}` | the visitor's unexpired on-site messages (write key, origin) |
| `GET /tracker.js` | the browser tracker (`streams/browser/tracker.js`) |
| `GET /shop/`, `/shop/c/{category}`, `/shop/p/{id}`, `/shop/cart` | the demo shop (`demo_shop_site`) |
| `GET /v1/visitors/{visitor_id}` | the visitor as served from Redis; 404 for an unknown visitor |
| `GET /v1/segments` | the definitions' segments with their member counts |
| `GET /v1/report` | segment sizes and KPIs read back from ClickHouse |
| `GET /dashboard` | the live dashboard (one page; its script polls `/v1/dashboard`) |
| `GET /v1/dashboard?minutes=N` | `DashboardAnswer`: sizes, flows, KPIs, funnel, lag, dead letters |
| `GET /v1/personas` | `PersonaReport`: who is in each segment (`tessera report` renders it) |
| `GET /v1/status` | owned partitions, profiles, lag, timers, the running definitions version, counters, GC |
| `GET /healthz` | `{"ok": true, "ready": ...}` (`Runtime.ready`) |
| `GET /v1/definitions` | admin: the head and the history of the definitions topic |
| `POST /v1/definitions` | admin: publish a definitions version (YAML body, or JSON `{text, comment}`) |
| `POST /v1/definitions/preview` | admin: what a version would change, over this worker's profiles |
| `POST /v1/definitions/rollback` | admin: make an earlier version the head again (JSON `{version}`) |
| `GET /v1/definitions/{version}` | admin: one version's record, its text included |

A collector request refused whole is answered 401 (write key), 403 (origin) or 413 (size).
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
import structlog
from aiohttp.web import HTTPRequestEntityTooLarge
from faust.web import Request, Response, View
from pydantic import SecretStr

from schemas.definitions import DefinitionsRecord
from streams import dashboard, gcstats
from streams.browser import dashboard_html, tracker_js
from streams.browser.shop import shop_page
from streams.core.definitions import DefinitionError, Definitions, parse_definitions
from streams.core.segments import Preview
from streams.definitions_store import DefinitionsStore, UnknownVersion, VersionClash, record_path
from streams.intake import CALL_ROUTES, Door, DoorAnswer, DoorRequest
from streams.runtime import Runtime

if TYPE_CHECKING:
    import faust

log = structlog.get_logger(__name__)


class WorkerView(View):
    """A view of one worker: `runtime` and `door` are set on the subclass `register_views` registers."""

    runtime: ClassVar[Runtime]
    door: ClassVar[Door]

    def answer(self, value: Any, status: int = 200) -> Response:
        """`value` as a JSON response (orjson)."""
        return self.bytes(orjson.dumps(value), content_type="application/json", status=status)


def door_request(request: Request, route: str) -> DoorRequest:
    """What `streams.intake.Door` reads of an HTTP request (aiohttp's, under Faust's type)."""
    raw = cast(Any, request)
    headers = raw.headers
    write_key = raw.query.get("writeKey")
    return DoorRequest(
        route=route,
        authorization=headers.get("Authorization"),
        origin=headers.get("Origin"),
        own_origin=f"{raw.scheme}://{raw.host}",
        content_length=raw.content_length,
        content_encoding=headers.get("Content-Encoding"),
        query_write_key=write_key if isinstance(write_key, str) else None,
        client_ip=raw.remote,
    )


class DoorView(WorkerView):
    """A route behind the collector's door (`streams.intake`): CORS preflights answered by it."""

    door_route: ClassVar[str] = "events"
    """The door's name of this route: `events`, `batch`, a Segment call, or `inbox`."""

    def reply(self, answer: DoorAnswer) -> Response:
        body = b"" if answer.status == 204 else orjson.dumps(answer.body)
        return self.bytes(body, content_type="application/json", status=answer.status, headers=answer.headers)

    async def options(self, request: Request) -> Response:
        headers = request.headers
        status, cors = self.door.preflight(
            door_request(request, self.door_route),
            headers.get("Access-Control-Request-Method"),
            headers.get("Access-Control-Request-Headers"),
        )
        return self.bytes(b"", status=status, headers=cors)


class CollectorView(DoorView):
    """Collector: a Segment-spec route or `/v1/events`; answers per event (`Door.collect`)."""

    async def post(self, request: Request) -> Response:
        rt = self.runtime
        door = self.door
        asked = door_request(request, self.door_route)
        refused = door.before_body(asked)
        if refused is not None:
            return self.reply(refused)
        try:
            body = await request.read()
        except HTTPRequestEntityTooLarge:  # a chunked body past aiohttp's own limit
            return self.reply(door.too_large(asked, None))
        answer = door.collect(asked, body, datetime.now(UTC))
        if answer.records:
            producer = await rt.engine.start_producer()
            acks = [await producer.send(topic, value, key=key) for topic, key, value in answer.records]
            await asyncio.gather(*acks)
        return self.reply(answer)


class InboxView(DoorView):
    """A visitor's on-site messages, for the tracker (write key and origin as the collector's)."""

    door_route = "inbox"

    async def get(self, request: Request, visitor_id: str) -> Response:
        asked = door_request(request, self.door_route)
        refused = self.door.inbox_refusal(asked)
        if refused is not None:
            return self.reply(refused)
        found = await self.runtime.serving.get_visitor(visitor_id)
        return self.reply(self.door.inbox(asked, visitor_id, found, datetime.now(UTC)))


class TrackerView(WorkerView):
    """`tracker.js`, gzipped for clients that accept it, cached for five minutes."""

    async def get(self, request: Request) -> Response:
        response = self.bytes(
            tracker_js(),
            content_type="application/javascript",
            headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
        )
        cast(Any, response).enable_compression()
        return response


class ShopView(WorkerView):
    """The demo shop (`streams.browser.shop`), when `demo_shop_site` names a configured site."""

    async def get(self, request: Request, **_: str) -> Response:
        settings = self.runtime.settings
        site = settings.sites.get(settings.demo_shop_site or "")
        if site is None:
            return self.answer({"error": "the demo shop is off (TESSERA_DEMO_SHOP_SITE)"}, status=404)
        status, html = shop_page(cast(Any, request).path, site.write_key.get_secret_value())
        return self.html(html, status=status)


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


class DashboardPageView(WorkerView):
    """The live dashboard: a page from the package, no CDN; its script draws SVG from `/v1/dashboard`."""

    async def get(self, request: Request) -> Response:
        return self.bytes(dashboard_html(), content_type="text/html", headers={"Cache-Control": "no-cache"})


class DashboardDataView(WorkerView):
    """What the dashboard draws over the last `minutes` (ClickHouse, Redis, this worker's figures)."""

    async def get(self, request: Request) -> Response:
        rt = self.runtime
        minutes = dashboard.range_minutes(cast(Any, request).query.get("minutes"))
        read = await asyncio.to_thread(rt.analytics.read, lambda ch: dashboard.read_dashboard(ch, minutes))
        answer = dashboard.dashboard_answer(
            read,
            await rt.serving.segment_counts(),
            await rt.engine.lag(),
            rt.engine.stats.as_dict(),
            rt.defs.version,
        )
        return self.bytes(answer.model_dump_json().encode(), content_type="application/json")


class PersonasView(WorkerView):
    """Who is in each segment with members (`tessera report` renders it as HTML)."""

    async def get(self, request: Request) -> Response:
        rt = self.runtime
        descriptions = {seg.id: seg.description for seg in rt.defs.segments}
        version = rt.defs.version
        report = await asyncio.to_thread(
            rt.analytics.read, lambda ch: dashboard.persona_report(ch, version, descriptions)
        )
        return self.bytes(report.model_dump_json().encode(), content_type="application/json")


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

ADMIN_OFF = "admin routes are off: set TESSERA_ADMIN_KEY on the worker and send Authorization: Bearer <key>"


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
    return 400, {"error": {"line": exc.line, "column": exc.column, "reason": exc.message, "path": exc.path}}


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


def _collector_route(route: str) -> type[CollectorView]:
    attributes = {"door_route": route, "__doc__": CollectorView.__doc__}
    return type(f"Collector{route.title()}View", (CollectorView,), attributes)


ROUTES: tuple[tuple[str, type[WorkerView]], ...] = (
    ("/v1/events", _collector_route("events")),
    ("/v1/batch", _collector_route("batch")),
    *((f"/v1/{call}", _collector_route(call)) for call in sorted(CALL_ROUTES)),
    ("/v1/inbox/{visitor_id}", InboxView),
    ("/tracker.js", TrackerView),
    ("/shop/", ShopView),
    ("/shop/cart", ShopView),
    ("/shop/c/{category}", ShopView),
    ("/shop/p/{product_id}", ShopView),
    ("/v1/visitors/{visitor_id}", VisitorView),
    ("/v1/segments", SegmentsView),
    ("/v1/report", ReportView),
    ("/dashboard", DashboardPageView),
    ("/v1/dashboard", DashboardDataView),
    ("/v1/personas", PersonasView),
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
    door = Door.from_settings(runtime.settings)
    if not runtime.settings.sites and not runtime.settings.collector_open:
        log.warning(
            "collector_closed",
            reason="no sites configured: every collector call is answered 401; set TESSERA_SITES "
            "(or TESSERA_COLLECTOR_OPEN=true for local development)",
        )
    elif runtime.settings.collector_open:
        log.warning("collector_open", reason="TESSERA_COLLECTOR_OPEN: calls without a known key are accepted")
    for path, view in ROUTES:
        bound = type(view.__name__, (view,), {"runtime": runtime, "door": door, "__doc__": view.__doc__})
        app.page(path)(cast(type[WorkerView], bound))
