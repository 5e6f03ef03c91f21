"""The persona report's HTML (`streams.report`) and the dashboard's request helpers, without ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.analytics import Persona, PersonaReport, SegmentKpis, TopValue
from streams import dashboard
from streams.report import recommendations, render_html


def kpis(segment: str, visitors: int, buyers: int, revenue: float, page_views: int) -> SegmentKpis:
    return SegmentKpis(
        segment=segment,
        events=visitors * 5,
        visitors=visitors,
        sessions=visitors,
        page_views=page_views,
        buyers=buyers,
        purchases=buyers,
        conversion_rate=buyers / visitors,
        revenue=revenue,
        revenue_per_user=revenue / visitors,
        page_views_per_user=page_views / visitors,
    )


BASELINE = Persona(
    segment="*",
    members=1000,
    share=1.0,
    visitors=1000,
    kpis=kpis("*", 1000, 100, 10_000.0, 3000),
    purchases=100,
    revenue=10_000.0,
    average_order_value=100.0,
)


def persona(segment: str, k: SegmentKpis, **extra: object) -> Persona:
    return Persona(
        segment=segment, members=k.visitors, share=k.visitors / 1000, visitors=k.visitors, kpis=k, **extra
    )  # type: ignore[arg-type]


def test_rules_fire_on_their_thresholds() -> None:
    rich = persona("top", kpis("top", 50, 20, 5_000.0, 150), average_order_value=250.0)
    assert [r.rule for r in recommendations(rich, BASELINE)] == ["high_value"]
    browsing = persona(
        "browsers",
        kpis("browsers", 100, 2, 100.0, 600),
        breakdowns={
            "devices": [TopValue(value="mobile", visitors=80)],
            "traffic_sources": [TopValue(value="search", visitors=60)],
        },
    )
    rules = [r.rule for r in recommendations(browsing, BASELINE)]
    assert rules == ["browse_no_buy", "low_conversion", "mobile_first", "search_led"]
    lapsed = persona("old", kpis("old", 40, 4, 400.0, 120), recency_days=45.0, average_order_value=100.0)
    assert [r.rule for r in recommendations(lapsed, BASELINE)] == ["lapsed"]
    plain = persona("plain", kpis("plain", 40, 4, 400.0, 120), average_order_value=100.0)
    assert [r.rule for r in recommendations(plain, BASELINE)] == ["observe"]


def test_html_is_self_contained_with_a_section_per_segment() -> None:
    report = PersonaReport(
        generated_at=datetime(2026, 12, 4, tzinfo=UTC),
        definition_version="v1",
        personas=[BASELINE, persona("a<b", kpis("a<b", 50, 20, 5_000.0, 150))],
        descriptions={"a<b": "escaped & shown"},
    )
    text = render_html(report)
    assert 'data-segment="a&lt;b"' in text and "escaped &amp; shown" in text
    assert 'data-segment="*"' in text
    assert "<script" not in text and "http" not in text.split("</style>", 1)[1].replace("http-equiv", "")
    assert "@media print" in text


def test_dashboard_range_and_buckets() -> None:
    assert dashboard.range_minutes(None) == 60
    assert dashboard.range_minutes("nonsense") == 60
    assert dashboard.range_minutes("1") == 5
    assert dashboard.range_minutes(str(10**9)) == dashboard.MAX_MINUTES
    assert dashboard.bucket_minutes(60) == 1
    assert dashboard.bucket_minutes(10080) == 112
