"""The answers of `/v1/dashboard` and `/v1/personas`, built from ClickHouse (`sinks.kpis`), the
serving store's live counts and the worker's own figures; the web views only fetch and serve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.analytics import DashboardAnswer, LiveSize, PersonaReport, WorkerHealth
from sinks import kpis

DEFAULT_MINUTES = 60
MAX_MINUTES = 60 * 24 * 31
MAX_BUCKETS = 90
"""The most time buckets a chart gets: the bucket grows with the range (1 minute up to 90 minutes)."""


def range_minutes(asked: str | None) -> int:
    """The `minutes` query parameter, bounded to [5, MAX_MINUTES]; the default for a missing or bad one."""
    try:
        minutes = int(asked) if asked is not None else DEFAULT_MINUTES
    except ValueError:
        minutes = DEFAULT_MINUTES
    return max(5, min(MAX_MINUTES, minutes))


def bucket_minutes(minutes: int) -> int:
    return max(1, -(-minutes // MAX_BUCKETS))


def read_dashboard(ch: kpis.ClickHouseReader, minutes: int, now: datetime | None = None) -> dict[str, Any]:
    """What ClickHouse contributes to the dashboard over the last `minutes` (run in a thread)."""
    rng = kpis.TimeRange.last(timedelta(minutes=minutes), now)
    bucket = bucket_minutes(minutes)
    return {
        "start": rng.start,
        "end": rng.end,
        "bucket_minutes": bucket,
        "flows": kpis.segment_flows(ch, rng, bucket),
        "kpis": kpis.kpi_table(ch, rng),
        "funnel": kpis.message_funnel(ch, rng),
    }


def dashboard_answer(
    read: dict[str, Any],
    live_counts: dict[str, int],
    lag: dict[str, dict[str, int | None]],
    stats: dict[str, Any],
    definition_version: str,
) -> DashboardAnswer:
    """The dashboard's answer from `read_dashboard`'s result, Redis's counts, `Engine.lag()` and the
    engine's counters."""
    return DashboardAnswer(
        generated_at=datetime.now(UTC),
        definition_version=definition_version,
        live_sizes=[LiveSize(segment=s, members=n) for s, n in sorted(live_counts.items())],
        health=WorkerHealth(
            records=int(stats.get("records", 0)),
            dead_letters=int(stats.get("dead_letters", 0)),
            lag=sum(int(p["lag"] or 0) for p in lag.values()),
            partitions=sorted(int(p) for p in lag),
        ),
        **read,
    )


def persona_report(
    ch: kpis.ClickHouseReader, definition_version: str, descriptions: dict[str, str]
) -> PersonaReport:
    """Every segment with members, as `tessera report` renders it (run in a thread)."""
    return PersonaReport(
        generated_at=datetime.now(UTC),
        definition_version=definition_version,
        personas=kpis.personas(ch),
        descriptions=descriptions,
    )
