"""Seeded, reproducible synthetic shop traffic with a ground truth of who belongs to which segment.

`simulate(visitors, seed, end, defs=...)` builds the clickstream of `visitors` visitors up to `end`
and, for each visitor, the segments Tessera must show for them at `end` (`Simulation.truth`), for
the definitions `defs` (default: the shipped `segments/default.yaml`). The values the personas aim
at are read from those definitions (`SegmentTargets`): the top-spender thresholds, the
frequent-buyer purchase count, products X and Y, the café and the tablet campaign's regions.
Every visitor has a persona whose behaviour sits clearly inside (or clearly outside) them:

- `loyal_buyer` (15 %) → frequent_buyers: 1 to 4 more purchases in the last 25 days than
  `frequent_buyer_purchases` (4-7 with the shipped 3), plus older ones; no coupons or discounts,
  spend per category far below the top-spender thresholds.
- `bargain_hunter` (15 %) → coupon_users, discount_lovers: 2-3 purchases in 80 days (at most 2 in
  the last 30), each with a coupon and discounted items; low spend.
- `window_shopper` (25 %) → nothing: views and searches only.
- `cart_abandoner` (12 %) → cart_abandoners: the last session fills the cart and leaves (last
  add_to_cart at least 45 minutes before `end`).
- `big_spender` (10 %) → the top-spender segment of one category: 1-2 purchases in it totalling
  1.5-3x its threshold.
- `casual_visitor` (23 %) → new_visitors: first seen in the last 5 days, a few page views.

Not in the shipped mix: `one_time_visitor`, one session of 1-5 events (page views, a product view,
rarely an add-to-cart never bought; → new_visitors when in the last 5 days, cart_abandoners when it
added to the cart). `LONG_TAIL_MIX` is long-tail traffic: 99.9 % one-time visitors and the
shipped personas in their shares, ≈ 52 distinct visitors per 100 events.

Every persona but `casual_visitor` is first seen more than 10 days before `end`; nobody but a cart
abandoner ends with a non-empty cart. Time margins keep every fact at least a day away from a
window edge (windows are UTC day buckets in Tessera's core), so the truth does not depend on the
time of day `end` falls on.

Micro-segments of the brief are planted on top (`streams.simulate.micro`): Swiss Android visitors
viewing product X in the last minutes before `end`; NRW iPhone users who bought product Y in the
last hours (drawn from loyal buyers); Munich Windows 10 visitors who landed on `/` from Google in a
session still active at `end` (window shoppers or casual visitors). Unmarked visitors are kept out
of them. Two static micro-segments follow from place, device and age alone and are in the truth
too: `tablet_south_germany` (tablets in `south_germany_regions`) and `cafe_radius_4km` (places
within `cafe_radius_km` of the café, ages `cafe_min_age`..`cafe_max_age` when known).
`SegmentTargets.covered` lists every segment the truth speaks for; other segments of the
definitions (high_intent, engaged_readers, ...) emerge from the traffic and are not predicted.

Determinism: one `random.Random(seed)` draws the plan (personas, ids, places, devices, one seed per
visitor); each visitor's events come from its own `random.Random(visitor_seed)`. No global random,
no uuid4, no wall clock: the same arguments give byte-identical `write_jsonl` output. Event ids are
UUID-shaped strings built from the visitor's generator.

Faults for tests: `SimParams.duplicate_rate` re-sends events with the same `event_id` (a client
retry, right after the original, identical bytes); `SimParams.malformed` adds N records of each
`MALFORMED_KINDS` reason to `Simulation.malformed` (never to `events`). `SimParams.no_consent_share`
gives visitors `personalization: false` consent; their expected segments are empty.

Modules: `catalogue`, `devices`, `places`, `sources` (what visitors see and come from); `targets`
(what the truth speaks for, read from the definitions); `plan` and `micro` (who the visitors are);
`visitor`, `session`, `browsing`, `shopping`, `personas` (what each one does); `truth`,
`malformed`, `run`, `output`.
"""

from streams.simulate.catalogue import CATALOGUE, CATEGORIES, PRODUCTS, Product
from streams.simulate.devices import DEVICES, DeviceProfile
from streams.simulate.malformed import MALFORMED_KINDS
from streams.simulate.output import read_truth, write_jsonl
from streams.simulate.params import DEFAULT_MIX, LONG_TAIL_MIX, SimParams
from streams.simulate.places import Place, load_places
from streams.simulate.results import Simulation, VisitorTruth
from streams.simulate.run import iter_events, simulate
from streams.simulate.targets import (
    MICRO_SEGMENTS,
    PERSONA_SEGMENTS,
    PERSONAS,
    STATIC_SEGMENTS,
    SegmentTargets,
    default_definitions,
    default_targets,
)

__all__ = [
    "CATALOGUE",
    "CATEGORIES",
    "DEFAULT_MIX",
    "DEVICES",
    "LONG_TAIL_MIX",
    "MALFORMED_KINDS",
    "MICRO_SEGMENTS",
    "PERSONAS",
    "PERSONA_SEGMENTS",
    "PRODUCTS",
    "STATIC_SEGMENTS",
    "DeviceProfile",
    "Place",
    "Product",
    "SegmentTargets",
    "SimParams",
    "Simulation",
    "VisitorTruth",
    "default_definitions",
    "default_targets",
    "iter_events",
    "load_places",
    "read_truth",
    "simulate",
    "write_jsonl",
]
