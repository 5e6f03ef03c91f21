"""The ground truth of one visitor: the segments Tessera must show for it at `end`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from streams.simulate.clock import iso
from streams.simulate.results import VisitorTruth
from streams.simulate.spec import VisitorSpec
from streams.simulate.targets import PERSONA_SEGMENTS, SegmentTargets


def expected_segments(
    spec: VisitorSpec, age: int | None, targets: SegmentTargets, extra: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """(every expected segment, the micro/static ones among them), each sorted; none without consent.
    `extra`: segments this visitor's behaviour earned beyond its persona's."""
    if not spec.consent:
        return [], []
    segments = set(PERSONA_SEGMENTS[spec.persona]) | set(extra)
    if spec.persona == "big_spender" and spec.category:
        segments.add(targets.top_spender_segments[spec.category])
    micro = set()
    if spec.micro:
        micro.add(spec.micro)
    if spec.device.category == "tablet" and spec.place.region_code in targets.south_germany_regions:
        micro.add("tablet_south_germany")
    if targets.cafe.admits(spec.place, age):
        micro.add("cafe_radius_4km")
    return sorted(segments | micro), sorted(micro)


def visitor_truth(
    spec: VisitorSpec,
    age: int | None,
    targets: SegmentTargets,
    span: tuple[int, int] | None,
    events: int,
    duplicates: int,
    extra: Iterable[str] = (),
) -> VisitorTruth:
    """The truth of a visitor whose events span (first, last) ms (None: no events); `extra` as for
    `expected_segments`."""
    expected, micro = expected_segments(spec, age, targets, extra)
    device = spec.device
    return VisitorTruth(
        **asdict(spec.place),
        visitor_id=spec.visitor_id,
        persona=spec.persona,
        expected_segments=expected,
        micro_segments=micro,
        category=spec.category,
        device=device.key,
        device_category=device.category,
        os=device.os,
        browser=device.browser,
        user_agent=device.user_agent,
        locale=spec.locale,
        consent=spec.consent,
        age=age,
        first_seen=iso(span[0]) if span else "",
        last_seen=iso(span[1]) if span else "",
        events=events,
        duplicates=duplicates,
    )
