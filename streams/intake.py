"""The collector's door: write keys, origins (CORS) and size limits, before `streams.collector`.

Pure: each function takes the parts of a request it needs (headers as strings, the body as bytes, the
receive time) and returns values — the status, the JSON answer, the response headers and the Kafka
records to send. The web views in `streams.web` only read the request, send the records and reply.

Routes (Segment's HTTP tracking API, plus Tessera's own):

- `POST /v1/batch`, `POST /v1/events`: a batch envelope `{"batch": [...]}`, an array, or one event;
  each item's `type` says its call;
- `POST /v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`, `/v1/alias`, `/v1/group`: one call,
  of the route's type unless the body names one;
- `GET /v1/inbox/{visitor_id}`: the visitor's on-site messages (`inbox`).

The door, in order (the first refusal answers; nothing of a refused request is written anywhere):

1. **write key**: HTTP Basic user name (`Authorization: Basic base64(key + ":")`, as every Segment
   SDK sends it), else a top-level `writeKey` in the body (analytics.js with `sendBeacon`), else a
   `writeKey` query parameter (the inbox route, for a browser GET without headers). Missing → 401
   `missing_write_key`, not a site's → 401 `unknown_write_key`. With `collector_open`, a missing or
   unknown key is let in with no site (local development only). A key in the header is checked
   before the body is read.
2. **size**: a body over `max_batch_bytes` (batch routes) or `max_event_bytes` (single-call routes)
   → 413 `batch_too_large` / `event_too_large`, from `Content-Length` before reading when it is
   given. `Content-Encoding: gzip` bodies are inflated up to the same limit.
3. **origin**: a browser's `Origin` must be one of the site's `origins` (or `*`), or the collector's
   own origin (the demo shop); otherwise 403 `origin_not_allowed`, without CORS headers. Requests
   without `Origin` (servers, SDKs, curl) are not origin-checked: CORS is the browser's protection.
4. **per event** (`streams.collector.parse_payload`): everything the worker would dead-letter for a
   reason known at the door is refused here, per event, with its typed reason: not JSON, unknown
   type, schema violation, larger than `max_event_bytes`, stamped more than `max_future_skew_s`
   ahead. Refused events also go to the dead-letter topic (`source: collector`). 200 when any event
   was accepted, 400 when all were refused.

CORS: a preflight (`OPTIONS`) carries no credentials, so it is answered for any origin some site
allows (204 with `Access-Control-Allow-*`), and refused (403, no CORS headers) otherwise; the
actual request then checks the origin against its own site. Every answer to an allowed origin
carries `Access-Control-Allow-Origin` (that origin) and `Vary: Origin`, so a browser can read even
a 401 or 413. Write keys are compared by dictionary lookup, not in constant time: like Segment's,
they are public (every page that loads the tracker shows its key); the admin key is the secret one.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import orjson
import structlog

from schemas.collector import CollectorError
from schemas.messages import Message
from schemas.onsite import InboxAnswer
from streams.collector import body_write_key, parse_body, parse_payload, route_items
from streams.settings import Settings, Site

__all__ = [
    "BATCH_ROUTES",
    "CALL_ROUTES",
    "Door",
    "DoorAnswer",
    "DoorRequest",
    "write_key_of_authorization",
]

log = structlog.get_logger(__name__)

BATCH_ROUTES: Final = frozenset({"batch", "events"})
"""Routes whose body is a batch (limit: `max_batch_bytes`)."""
CALL_ROUTES: Final = frozenset({"track", "page", "screen", "identify", "alias", "group"})
"""Single-call routes: `/v1/<call>`, the body one call (limit: `max_event_bytes`)."""

ALLOWED_METHODS: Final = "GET, POST, OPTIONS"
ALLOWED_HEADERS: Final = frozenset({"authorization", "content-type", "content-encoding", "x-retry-count"})
PREFLIGHT_MAX_AGE_S: Final = 86_400

ErrorCode = Literal[
    "missing_write_key",
    "unknown_write_key",
    "origin_not_allowed",
    "batch_too_large",
    "event_too_large",
    "body_unreadable",
]
Records = list[tuple[str, bytes | None, bytes]]


@dataclass(frozen=True, slots=True)
class DoorRequest:
    """What the door reads of one HTTP request."""

    route: str
    """`batch`, `events`, one of `CALL_ROUTES`, or `inbox`."""
    authorization: str | None = None
    origin: str | None = None
    own_origin: str | None = None
    """`scheme://host[:port]` this request was addressed to: an `Origin` equal to it is same-origin."""
    content_length: int | None = None
    content_encoding: str | None = None
    query_write_key: str | None = None
    client_ip: str | None = None
    """The peer address: the `context.ip` of Segment calls without one (X-Forwarded-For is not read)."""


@dataclass(frozen=True, slots=True)
class DoorAnswer:
    """The response to give, and the Kafka records to send before giving it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    records: Records = field(default_factory=list)
    site_id: str | None = None


def write_key_of_authorization(authorization: str | None) -> str | None:
    """The user name of an HTTP Basic `Authorization` header (Segment's write key); None when the
    header is missing, not Basic or not decodable."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = decoded.partition(":")[0]
    return user or None


def _inflate(body: bytes, limit: int) -> bytes | None:
    """A gzip body inflated, None when it is not gzip or inflates past `limit` bytes."""
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        return None
    return None if len(out) > limit or inflater.unconsumed_tail else out


def _error(status: int, code: ErrorCode, detail: str, headers: dict[str, str] | None = None) -> DoorAnswer:
    body = CollectorError(error=code, detail=detail).model_dump(mode="json")
    return DoorAnswer(status, body, dict(headers or {}))


class Door:
    """The collector's door for one worker: its sites, limits and topics (`from_settings`)."""

    def __init__(
        self,
        sites: Mapping[str, Site],
        *,
        open_mode: bool = False,
        max_event_bytes: int = 32_768,
        max_batch_bytes: int = 512_000,
        max_future_skew_s: float | None = 300.0,
        events_topic: str = "events",
        dlq_topic: str = "events.dlq",
    ) -> None:
        self.sites = dict(sites)
        self.open_mode = open_mode
        self.max_event_bytes = max_event_bytes
        self.max_batch_bytes = max_batch_bytes
        self.max_future_skew_s = max_future_skew_s
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self._site_of_key = {s.write_key.get_secret_value(): site_id for site_id, s in self.sites.items()}
        self._any_origin = open_mode or any("*" in site.origins for site in self.sites.values())
        self._origins = frozenset(o.rstrip("/") for site in self.sites.values() for o in site.origins)

    @classmethod
    def from_settings(cls, settings: Settings) -> Door:
        return cls(
            settings.sites,
            open_mode=settings.collector_open,
            max_event_bytes=settings.max_event_bytes,
            max_batch_bytes=settings.max_batch_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            events_topic=settings.events_topic,
            dlq_topic=settings.dlq_topic,
        )

    # -- origins ----------------------------------------------------------------------------------

    def _same_origin(self, request: DoorRequest) -> bool:
        return request.origin is not None and request.origin.rstrip("/") == (request.own_origin or "")

    def origin_known(self, request: DoorRequest) -> bool:
        """Whether some site (or open mode, or same-origin) allows the request's `Origin`; True
        for a request without one."""
        origin = request.origin
        if origin is None:
            return True
        return self._any_origin or origin.rstrip("/") in self._origins or self._same_origin(request)

    def origin_allowed(self, request: DoorRequest, site_id: str | None) -> bool:
        """Whether the site `site_id` (None: let in by open mode) allows the request's `Origin`."""
        origin = request.origin
        if origin is None or self._same_origin(request):
            return True
        site = self.sites.get(site_id) if site_id is not None else None
        if site is None:
            return self.open_mode
        return "*" in site.origins or origin.rstrip("/") in {o.rstrip("/") for o in site.origins}

    def cors_headers(self, request: DoorRequest) -> dict[str, str]:
        """The CORS headers of an answer to this request: none without an `Origin` or for an origin
        no site allows."""
        if request.origin is None or not self.origin_known(request):
            return {}
        return {"Access-Control-Allow-Origin": request.origin, "Vary": "Origin"}

    def preflight(
        self, request: DoorRequest, method: str | None, headers: str | None
    ) -> tuple[int, dict[str, str]]:
        """The answer to an `OPTIONS` preflight: (204, CORS headers) for an origin some site allows
        asking for an allowed method and headers, else (403, no CORS headers)."""
        if request.origin is None or not self.origin_known(request):
            return 403, {}
        if (method or "").upper() not in {"GET", "POST"}:
            return 403, {}
        asked = {h.strip().lower() for h in (headers or "").split(",") if h.strip()}
        if not asked <= ALLOWED_HEADERS:
            return 403, {}
        return 204, {
            **self.cors_headers(request),
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding, X-Retry-Count",
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        }

    # -- write keys -------------------------------------------------------------------------------

    def site_of(self, key: str | None) -> tuple[str | None, ErrorCode | None]:
        """(site id, None) for a known key; (None, None) when open mode lets the request in without
        one; (None, the 401 reason) otherwise."""
        if key is not None and key in self._site_of_key:
            return self._site_of_key[key], None
        if self.open_mode:
            return None, None
        if key is None:
            return None, "missing_write_key"
        return None, "unknown_write_key"

    def _unauthorized(self, request: DoorRequest, code: ErrorCode) -> DoorAnswer:
        if code == "missing_write_key":
            detail = "send the site's write key as the HTTP Basic user name (or `writeKey` in the body)"
            if not self.sites:
                detail += (
                    "; no sites are configured: set TESSERA_SITES (or TESSERA_COLLECTOR_OPEN for local dev)"
                )
        else:
            detail = "the write key is not one of this collector's sites (TESSERA_SITES)"
        headers = {**self.cors_headers(request), "WWW-Authenticate": 'Basic realm="tessera"'}
        return _error(401, code, detail, headers)

    def _forbidden_origin(self, request: DoorRequest, site_id: str | None) -> DoorAnswer:
        detail = f"origin {request.origin!r} is not allowed for site {site_id!r}"
        return _error(403, "origin_not_allowed", detail)

    # -- the collector ----------------------------------------------------------------------------

    def limit_of(self, route: str) -> int:
        return self.max_batch_bytes if route in BATCH_ROUTES else self.max_event_bytes

    def too_large(self, request: DoorRequest, size: int | None) -> DoorAnswer:
        """The 413 of a body of `size` bytes (None: unknown) over the route's limit."""
        limit = self.limit_of(request.route)
        batch = request.route in BATCH_ROUTES
        return _error(
            413,
            "batch_too_large" if batch else "event_too_large",
            f"{'the body' if size is None else f'{size} bytes'} > limit {limit} bytes per "
            f"{'request' if batch else 'call'}" + (" (send smaller batches)" if batch else ""),
            self.cors_headers(request),
        )

    def before_body(self, request: DoorRequest) -> DoorAnswer | None:
        """The refusal of a collector request known before its body is read: an unknown write key in
        the header, a `Content-Length` over the route's limit. None: read the body."""
        header_key = write_key_of_authorization(request.authorization)
        if header_key is not None:
            _, refused = self.site_of(header_key)
            if refused is not None:
                return self._unauthorized(request, refused)
        if request.content_length is not None and request.content_length > self.limit_of(request.route):
            return self.too_large(request, request.content_length)
        return None

    def collect(self, request: DoorRequest, body: bytes, received_at: datetime) -> DoorAnswer:
        """The whole door for one collector request whose body has been read: refusal, or the
        records to send (events and dead letters) and the per-event answer."""
        early = self.before_body(request)
        if early is not None:
            return early
        limit = self.limit_of(request.route)
        if len(body) > limit:
            return self.too_large(request, len(body))
        if (request.content_encoding or "").strip().lower() in {"gzip", "deflate"}:
            inflated = _inflate(body, limit)
            if inflated is None:
                return _error(
                    413 if body else 400,
                    "batch_too_large" if request.route in BATCH_ROUTES else "event_too_large",
                    f"the {request.content_encoding} body is not readable or inflates past {limit} bytes",
                    self.cors_headers(request),
                )
            body = inflated
        try:
            payload: Any = orjson.loads(body)
            decoded = True
        except orjson.JSONDecodeError:
            payload, decoded = None, False
        key = write_key_of_authorization(request.authorization) or body_write_key(payload)
        site_id, refused = self.site_of(key)
        if refused is not None:
            return self._unauthorized(request, refused)
        if not self.origin_allowed(request, site_id):
            return self._forbidden_origin(request, site_id)
        if decoded:
            items = parse_payload(
                payload,
                body,
                received_at,
                self.max_event_bytes,
                max_future_skew_s=self.max_future_skew_s,
                default_type=request.route if request.route in CALL_ROUTES else None,
                site_id=site_id,
                client_ip=request.client_ip,
            )
        else:  # the not_json item, as parse_body makes it
            items = parse_body(body, received_at, self.max_event_bytes)
        routed = route_items(
            items, events_topic=self.events_topic, dlq_topic=self.dlq_topic, received_at=received_at
        )
        return DoorAnswer(routed.status, routed.answer, self.cors_headers(request), routed.records, site_id)

    # -- the inbox --------------------------------------------------------------------------------

    def inbox_refusal(self, request: DoorRequest) -> DoorAnswer | None:
        """The refusal of an inbox read (write key from the header or the query, then the origin);
        None when it may be answered."""
        key = write_key_of_authorization(request.authorization) or request.query_write_key or None
        site_id, refused = self.site_of(key)
        if refused is not None:
            return self._unauthorized(request, refused)
        if not self.origin_allowed(request, site_id):
            return self._forbidden_origin(request, site_id)
        return None

    def inbox(
        self, request: DoorRequest, visitor_id: str, found: Mapping[str, Any] | None, now: datetime
    ) -> DoorAnswer:
        """The answer of `GET /v1/inbox/{visitor_id}` from the visitor as served (`get_visitor`):
        its unexpired on-site messages, oldest first (an unknown visitor has none)."""
        messages = [Message.model_validate(m) for m in (found or {}).get("inbox", [])]
        onsite = [
            m
            for m in messages
            if m.channel == "onsite" and m.deliverable and (m.expires_at is None or m.expires_at > now)
        ]
        answer = InboxAnswer(visitor_id=visitor_id, messages=onsite)
        headers = {**self.cors_headers(request), "Cache-Control": "no-store"}
        return DoorAnswer(200, answer.model_dump(mode="json"), headers)
