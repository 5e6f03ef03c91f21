"""The rolling behaviour profile of one visitor and `apply(profile, event)`.

A profile keeps its events twice (`streams.core.timeline`): as event-time day buckets — `days` maps
an epoch day (UTC) to a flat dict of metric → value, a metric being a plain name (`purchases`) or a
name and a dimension joined with `@` (`spend@electronics`) — and as the timeline, its latest
`TIMELINE_MAX` events as short entries, whole days only, for windows exact to the second
(`streams.core.windows`); `totals` holds lifetime sums. Buckets and timeline entries older than
`RETENTION_DAYS` are dropped when a new day's bucket starts, so a profile's size is bounded.

Profiles are stored serialised (`Profile.to_bytes`) and decoded per batch, so `apply` mutates the
profile it is handed and returns it: the caller owns that copy.

Serialised form (format 1 and later), all little-endian::

    header      4 s  FORMAT_TAG (b"TP", format number, 0xFF)
                8 d  last_seen
                8 d  next_check_at (NaN for None)
                2 H  n = len(recent_event_ids)
    event ids   n × 8 q  recent_event_ids
    cohorts     4 I  m, then m bytes: orjson of cohort_values (m = 0: none)      (format 5 on)
    body        LZ4 block (size-prefixed) of orjson [value, value, ...]: every other field, positional
                in `_BODY_FIELDS` order (field names are not stored); `days` as [[day, bucket], ...]

The header lets recovery read a profile's clock fields and cohort values without decoding it
(`profile_clock_fields`, `profile_cohort_values`); the event-id hashes are random 64-bit numbers,
8 bytes each in binary against ~20 as JSON text, and LZ4 could not shrink them. The tag's last byte
makes the first four bytes, read as the legacy format's uint32 size prefix, larger than any LZ4
block: profiles written before format 1 (`lz4(orjson(dataclass))`) are told apart and still decoded.

New fields go at the end of `Profile`: bump `FORMAT_NUMBER` and record the previous format's body
length in `_BODY_LENGTHS`; its profiles (they live on in the changelog) decode with the new fields'
defaults. Removing or reordering a field needs a decoder of its own.
"""

from __future__ import annotations

import hashlib
import math
import struct
from bisect import bisect_left, bisect_right
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from operator import attrgetter, itemgetter
from typing import Any

import lz4.block
import orjson

from schemas.enriched import EnrichedEvent
from schemas.events import (
    AddToCart,
    CategoryView,
    ExitIntent,
    Identify,
    PageView,
    ProductView,
    Purchase,
    RemoveFromCart,
)
from streams.core.timeline import TIMELINE_MAX, contributions, entry_of

DAY_S = 86_400
RETENTION_DAYS = 400
"""Longest window any attribute may use is 365 days; keep a little slack."""
SESSION_GAP_S = 30 * 60
"""A new session starts after 30 minutes of inactivity when the client sends no session_id."""
RECENT_ITEMS = 10
"""How many recently viewed / purchased products a profile remembers."""


# Metric names counted into day buckets (the vocabulary attribute definitions may use).
METRICS: frozenset[str] = frozenset(
    {
        "events",
        "page_views",
        "home_views",
        "category_views",
        "product_views",
        "searches",
        "cart_views",
        "add_to_carts",
        "remove_from_carts",
        "checkouts",
        "purchases",
        "coupon_purchases",
        "discount_purchases",
        "promo_purchases",
        "spend",
        "items_bought",
        "coupon_uses",
        "exit_intents",
        "sessions",
    }
)
DIMENSIONED_METRICS: frozenset[str] = frozenset(
    {"category_views", "product_views", "add_to_carts", "spend", "items_bought"}
)
"""Metrics also counted per category (`spend@electronics`)."""


@dataclass(slots=True)
class Profile:
    visitor_id: str
    user_id: str | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_offset: int = -1
    """Source offset of the last event applied: replays after a crash skip what is already in."""
    recent_event_ids: list[int] = field(default_factory=list)
    """64-bit hashes of the last `dedupe_window` event ids: client retries are dropped. Hashes,
    not the ids: random UUIDs were half of a serialised profile."""

    session_id: str | None = None
    session_started: float = 0.0
    session_landing_path: str | None = None
    session_source: str | None = None
    session_source_name: str | None = None

    device_category: str | None = None
    os: str | None = None
    os_version: str | None = None
    browser: str | None = None
    country: str | None = None
    region: str | None = None
    region_code: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    traffic_source: str | None = None
    traffic_name: str | None = None
    last_page_path: str | None = None
    last_page_type: str | None = None
    locale: str | None = None
    age: int | None = None
    traits: dict[str, Any] = field(default_factory=dict)

    days: dict[int, dict[str, float]] = field(default_factory=dict)
    cart: dict[str, int] = field(default_factory=dict)
    cart_value: float = 0.0
    last_add_to_cart_at: float | None = None
    last_purchase_at: float | None = None
    last_exit_intent_at: float | None = None
    recent_views: list[tuple[str, float]] = field(default_factory=list)
    """(product_id, time) of the last product views, newest last."""
    recent_purchases: list[tuple[str, float]] = field(default_factory=list)
    """(product_id, time) of the last purchased products, newest last."""

    segments: list[str] = field(default_factory=list)
    """Segments the visitor is in now (sorted); the evaluator diffs against it."""
    segment_since: dict[str, float] = field(default_factory=dict)
    next_check_at: float | None = None
    """When a time-based condition may next change (the due-queue entry for this visitor)."""
    consent_marketing: bool = True
    """Last marketing consent the visitor's events carried; no ads/e-mail messages without it."""
    trigger_last_sent: dict[str, float] = field(default_factory=dict)
    """Trigger rule id → event time it last sent a message (frequency caps)."""
    # Fields from here on were added after format 1; new fields go at the end (see `_BODY_LENGTHS`).
    evaluated_at: float = 0.0
    """Moment (event time) of the latest segment evaluation: an event older than it arrived late."""
    timeline: list[list[Any]] = field(default_factory=list)
    """The latest events as entries, sorted by time (`streams.core.timeline`): exact windows."""
    timeline_from_day: int = 0
    """Every event of this UTC day and later is in `timeline` (older days: buckets only)."""
    totals: dict[str, float] = field(default_factory=dict)
    """Lifetime sum of every metric key (buckets expire; lifetime attributes read this)."""
    definitions_sha: str = ""
    """`Definitions.source_sha` of the latest evaluation: under other definitions every segment is
    evaluated again (`streams.core.segments`)."""
    cohort_values: dict[str, float] = field(default_factory=dict)
    """Cohort name → this profile's value in the cohort's population (its attribute's value, when
    > 0) as of the latest evaluation: what the partition's quantile sketch counts for it
    (`streams.core.sketch.PartitionCohorts`)."""
    timer_moments: list[float | None] = field(default_factory=list)
    """The next moment of each timer source as `next_check_at` last found it, to reuse while no
    event that source counts has arrived: ``[events, timeline_from_day, index, moment, ...]`` —
    `totals["events"]` and `timeline_from_day` then, and per `Definitions.timer_source_index`
    its moment (None: none pending). Empty: nothing kept."""
    journey_state: dict[str, Any] = field(default_factory=dict)
    """Journeys and messaging (`streams.core.journeys`): ``active`` journey id → its state (entry
    time, current step, due moment, step count), ``entered`` journey id → latest entry (re-entry),
    ``sent`` the recent messages as `streams.core.guardrails.SentRecord` rows (caps, attribution).
    Empty for a visitor never messaged."""

    # -- (de)serialisation -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The serialised form (see the module docstring)."""
        ids = self.recent_event_ids
        next_check_at = self.next_check_at
        body = list(_body_values(self))
        body[_DAYS_AT] = list(self.days.items())
        head = _head_struct(len(ids)).pack(
            FORMAT_TAG, self.last_seen, _NO_TIME if next_check_at is None else next_check_at, len(ids), *ids
        )
        cohorts = orjson.dumps(self.cohort_values) if self.cohort_values else b""
        # Every dict left in the body has str keys (`days`, the only int-keyed one, is a list here).
        return head + _COHORTS_SIZE.pack(len(cohorts)) + cohorts + lz4.block.compress(orjson.dumps(body))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Profile:
        tag, last_seen, next_check_at, count = _HEADER.unpack_from(raw)
        if tag != FORMAT_TAG and tag not in _OLDER_TAGS:
            return cls._from_legacy_bytes(raw)
        body_at = ids_end = _HEADER.size + 8 * count
        cohort_values: dict[str, float] = {}
        if tag[2] >= 5:  # format 5 on: the cohort values follow the event ids
            cohorts_end = ids_end + _COHORTS_SIZE.size + _COHORTS_SIZE.unpack_from(raw, ids_end)[0]
            if cohorts_end > ids_end + _COHORTS_SIZE.size:
                cohort_values = orjson.loads(memoryview(raw)[ids_end + _COHORTS_SIZE.size : cohorts_end])
            body_at = cohorts_end
        values = orjson.loads(lz4.block.decompress(memoryview(raw)[body_at:]))
        if tag == _FORMAT_4_TAG:  # format 4 kept `cohort_values` as the body's last field
            cohort_values = values.pop()
        if len(values) < len(_BODY_FIELDS):  # an older format: the fields added since take defaults
            values += [_default(name) for name in _BODY_FIELDS[len(values) :]]
        values[_DAYS_AT] = dict(values[_DAYS_AT])
        values[_RECENT_VIEWS_AT] = list(map(tuple, values[_RECENT_VIEWS_AT]))
        values[_RECENT_PURCHASES_AT] = list(map(tuple, values[_RECENT_PURCHASES_AT]))
        # Back into dataclass field order (ascending positions, so earlier inserts hold).
        values.insert(_LAST_SEEN_AT, last_seen)
        values.insert(_RECENT_EVENT_IDS_AT, list(_ids_struct(count).unpack_from(raw, _HEADER.size)))
        values.insert(_NEXT_CHECK_AT_AT, None if math.isnan(next_check_at) else next_check_at)
        values.insert(_COHORT_VALUES_AT, cohort_values)
        return cls(*values)

    @classmethod
    def _from_legacy_bytes(cls, raw: bytes) -> Profile:
        """Before format 1: LZ4 block of orjson of the dataclass (field names included)."""
        data = orjson.loads(lz4.block.decompress(raw))
        data["days"] = {int(day): bucket for day, bucket in data.get("days", {}).items()}
        data["recent_views"] = [tuple(v) for v in data.get("recent_views", [])]
        data["recent_purchases"] = [tuple(v) for v in data.get("recent_purchases", [])]
        try:
            # Positional: keyword matching of 40 non-interned keys cost 13 µs, this 2.7 µs.
            values = [data[name] for name in _FIELDS]
        except KeyError:
            return cls(**data)  # written before a field was added: its default applies
        return cls(*values)

    def summary(self) -> dict[str, Any]:
        """The serving view: what a website needs, without the bucket history."""
        return {
            "visitor_id": self.visitor_id,
            "user_id": self.user_id,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "device": {"category": self.device_category, "os": self.os, "browser": self.browser},
            "geo": {"country": self.country, "region": self.region, "city": self.city},
            "traffic": {"source": self.traffic_source, "name": self.traffic_name},
            "cart": {"items": sum(self.cart.values()), "value": round(self.cart_value, 2)},
            "last_purchase_at": self.last_purchase_at,
            "segments": list(self.segments),
        }


FORMAT_NUMBER = 7
FORMAT_TAG = b"TP" + bytes([FORMAT_NUMBER]) + b"\xff"
"""First bytes of a serialised profile: "TP", the format number, and 0xFF (as a little-endian uint32
that is beyond LZ4's block limit, so never the size prefix of a legacy profile)."""
_BODY_LENGTHS = {1: 38, 2: 39, 3: 43, 4: 44, 5: 43, 6: 44}
"""Body fields of each older format: formats 1–4 differ only by fields appended at the end; format
5 moved `cohort_values` (format 4's last body field) to the header; format 6 appended
`timer_moments`; format 7 appended `journey_state`."""
_OLDER_TAGS = frozenset(b"TP" + bytes([number]) + b"\xff" for number in _BODY_LENGTHS)
_FORMAT_4_TAG = b"TP\x04\xff"
_HEADER = struct.Struct("<4sddH")
_COHORTS_SIZE = struct.Struct("<I")
"""Length of the orjson of `cohort_values` after the event ids (format 5 on; 0 for none)."""
_NO_TIME = math.nan
"""`next_check_at` None in the header."""


@cache
def _head_struct(count: int) -> struct.Struct:
    """The header followed by `count` event-id hashes, as one struct (one per count, cached)."""
    return struct.Struct(f"{_HEADER.format}{count}q")


@cache
def _ids_struct(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}q")


_HEADER_FIELDS = ("last_seen", "recent_event_ids", "next_check_at", "cohort_values")
_FIELDS = [f.name for f in fields(Profile)]
_BODY_FIELDS = [name for name in _FIELDS if name not in _HEADER_FIELDS]
_body_values = attrgetter(*_BODY_FIELDS)
_DAYS_AT = _BODY_FIELDS.index("days")
_RECENT_VIEWS_AT = _BODY_FIELDS.index("recent_views")
_RECENT_PURCHASES_AT = _BODY_FIELDS.index("recent_purchases")
_LAST_SEEN_AT = _FIELDS.index("last_seen")
_RECENT_EVENT_IDS_AT = _FIELDS.index("recent_event_ids")
_NEXT_CHECK_AT_AT = _FIELDS.index("next_check_at")
_COHORT_VALUES_AT = _FIELDS.index("cohort_values")


def _default(name: str) -> Any:
    spec = _FIELD_SPECS[name]
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default


_FIELD_SPECS = {f.name: f for f in fields(Profile)}


def profile_clock_fields(raw: bytes) -> tuple[float, float | None]:
    """(last_seen, next_check_at) of a serialised profile, read from its header: no decompression,
    no parsing (recovery needs only these of every restored profile)."""
    tag, last_seen, next_check_at, _ = _HEADER.unpack_from(raw)
    if tag != FORMAT_TAG and tag not in _OLDER_TAGS:
        profile = Profile.from_bytes(raw)
        return profile.last_seen, profile.next_check_at
    return last_seen, None if math.isnan(next_check_at) else next_check_at


def profile_cohort_values(raw: bytes) -> dict[str, float]:
    """`cohort_values` of a serialised profile, read from its header (format 5 on) without
    decompressing its body: recovery rebuilds the partition's cohort sketches from these."""
    tag, _, _, count = _HEADER.unpack_from(raw)
    if tag != FORMAT_TAG:
        return Profile.from_bytes(raw).cohort_values
    at = _HEADER.size + 8 * count
    size = _COHORTS_SIZE.unpack_from(raw, at)[0]
    if not size:
        return {}
    values: dict[str, float] = orjson.loads(
        memoryview(raw)[at + _COHORTS_SIZE.size : at + _COHORTS_SIZE.size + size]
    )
    return values


def _push_recent(items: list[tuple[str, float]], product_id: str, at: float) -> None:
    items.append((product_id, at))
    if len(items) > RECENT_ITEMS:
        del items[: len(items) - RECENT_ITEMS]


def event_id_hash(event_id: str) -> int:
    """Stable 64-bit hash of an event id (collision odds per visitor ≈ window / 2^64)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big", signed=True)


def new_profile(visitor_id: str) -> Profile:
    return Profile(visitor_id=visitor_id)


def apply(profile: Profile, enriched: EnrichedEvent, at: float | None = None) -> Profile:
    """Fold one enriched event into the profile (mutates and returns `profile`).

    `at` is the event time in epoch seconds if the caller has it (`ingest.decode_timed`).
    Duplicate detection (event id, source offset) is the caller's job (`streams.core.batch`):
    `apply` counts whatever it is given.

    The event becomes a timeline entry (`streams.core.timeline.entry_of`); what it counts
    (`contributions`) goes into its day bucket and the lifetime totals, and the entry into the
    timeline. Longer than the house limit on purpose: it runs once per event on the hot path, where
    splitting it into per-section helpers adds calls and repeated look-ups to every event; its
    sections (session, device and place, traffic, counts, the event type's own state) read top-down.
    """
    event = enriched.event
    if at is None:
        at = event.event_time.timestamp()

    if profile.first_seen == 0.0 or at < profile.first_seen:
        profile.first_seen = at
    # A new session: explicit id changed, or 30 minutes of silence without ids.
    new_session = (event.session_id is not None and event.session_id != profile.session_id) or (
        event.session_id is None and (profile.last_seen == 0.0 or at - profile.last_seen > SESSION_GAP_S)
    )
    if new_session:
        profile.session_id = event.session_id
        profile.session_started = at
        profile.session_landing_path = event.context.page_path
        profile.session_source = enriched.traffic.source
        profile.session_source_name = enriched.traffic.name
    profile.last_seen = max(profile.last_seen, at)
    if event.user_id:
        profile.user_id = event.user_id

    device = enriched.device
    if device.category != "other" or profile.device_category is None:
        profile.device_category = device.category
        profile.os = device.os
        profile.os_version = device.os_version
        profile.browser = device.browser
    geo = enriched.geo
    if geo.source != "none":
        profile.country, profile.region, profile.region_code = geo.country, geo.region, geo.region_code
        profile.city, profile.lat, profile.lon = geo.city, geo.lat, geo.lon
    if new_session or enriched.traffic.source not in ("direct", "internal"):
        profile.traffic_source = enriched.traffic.source
        profile.traffic_name = enriched.traffic.name
    profile.consent_marketing = event.context.consent.marketing
    if event.context.locale:
        profile.locale = event.context.locale
    if event.context.page_path is not None:
        profile.last_page_path = event.context.page_path

    entry = entry_of(event, at, new_session)
    day = int(at // DAY_S)
    bucket = profile.days.get(day)
    new_day = bucket is None
    if bucket is None:
        bucket = profile.days[day] = {}
    totals = profile.totals
    for key, amount in contributions(entry):
        # Counts stay ints (serialised as "3", not "3.0"); money stays float.
        bucket[key] = bucket.get(key, 0) + amount
        totals[key] = totals.get(key, 0) + amount
    timeline = profile.timeline
    if day >= profile.timeline_from_day:
        if not timeline or timeline[-1][0] <= at:
            timeline.append(entry)
        else:  # out of order: keep the timeline sorted by time
            timeline.insert(bisect_right(timeline, at, key=itemgetter(0)), entry)
        if len(timeline) > TIMELINE_MAX:
            _trim_timeline(profile)

    if isinstance(event, PageView):
        profile.last_page_type = event.properties.page_type
    elif isinstance(event, CategoryView):
        profile.last_page_type = "category"
    elif isinstance(event, ProductView):
        _push_recent(profile.recent_views, event.properties.product_id, at)
        profile.last_page_type = "product"
    elif isinstance(event, AddToCart):
        added = event.properties
        profile.cart[added.product_id] = profile.cart.get(added.product_id, 0) + added.quantity
        profile.cart_value += added.price * added.quantity
        profile.last_add_to_cart_at = at
    elif isinstance(event, RemoveFromCart):
        removed = event.properties
        left = profile.cart.get(removed.product_id, 0) - removed.quantity
        if left > 0:
            profile.cart[removed.product_id] = left
        else:
            profile.cart.pop(removed.product_id, None)
        if not profile.cart:
            profile.cart_value = 0.0
    elif isinstance(event, Purchase):
        for item in event.properties.items:
            _push_recent(profile.recent_purchases, item.product_id, at)
        profile.cart.clear()
        profile.cart_value = 0.0
        profile.last_purchase_at = at
    elif isinstance(event, ExitIntent):
        profile.last_exit_intent_at = at
    elif isinstance(event, Identify):
        known = event.properties
        if known.age is not None:
            profile.age = known.age
        profile.traits.update(known.traits)

    if new_day:
        # Buckets only fall out of retention when a new day starts (min() over ~60 days per event
        # was 6 % of the worker).
        _expire(profile, day)
    return profile


def _trim_timeline(profile: Profile) -> None:
    """Drop the oldest whole days until at most `TIMELINE_MAX` entries are left."""
    timeline = profile.timeline
    last_dropped_day = int(timeline[len(timeline) - TIMELINE_MAX - 1][0] // DAY_S)
    del timeline[: bisect_left(timeline, (last_dropped_day + 1) * DAY_S, key=itemgetter(0))]
    profile.timeline_from_day = last_dropped_day + 1


def _expire(profile: Profile, today: int) -> None:
    oldest = today - RETENTION_DAYS
    if len(profile.days) > 1 and min(profile.days) < oldest:
        for stale in [d for d in profile.days if d < oldest]:
            del profile.days[stale]
        timeline = profile.timeline
        if timeline and timeline[0][0] < oldest * DAY_S:
            del timeline[: bisect_left(timeline, oldest * DAY_S, key=itemgetter(0))]
        profile.timeline_from_day = max(profile.timeline_from_day, oldest)
