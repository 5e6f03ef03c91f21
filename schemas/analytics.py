"""What the dashboard, the persona report and the exports exchange (each model says its version).

- `DashboardAnswer`: `GET /v1/dashboard?minutes=N` on a worker, read by `/dashboard`'s script.
- `PersonaReport`: `GET /v1/personas`, rendered by `tessera report` into one HTML file.
- `ExportManifest`: written beside every `tessera export` file (`<file>.manifest.json`).

The row models (`SegmentKpis`, `FlowPoint`, `FunnelRow`, `Persona`) are what `sinks.kpis` returns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class SegmentKpis(_Row):
    """One segment's row of the side-by-side KPI table (`*`: every visitor, the baseline)."""

    segment: str
    events: int
    visitors: int
    sessions: int
    page_views: int
    buyers: int
    purchases: int
    conversion_rate: float = Field(description="buyers / visitors")
    revenue: float
    revenue_per_user: float = Field(description="revenue / visitors")
    page_views_per_user: float = Field(description="page views / visitors")


class FlowPoint(_Row):
    """One time bucket of a segment: entries and exits in it, and the size at its end."""

    start: datetime
    entries: int
    exits: int
    size: int


class FunnelRow(_Row):
    """Version 2 (in `DashboardAnswer` v2): one campaign and variant of the message funnel, over the
    messages decided in a time range, or the campaign's holdout records (`holdout`). Version 1 had
    `kind`, counted conversions as any purchase after a message, and had no outcomes."""

    campaign: str = Field(description="the messages' campaign; their trigger rule when they name none")
    variant: str = Field(description='the A/B variant ("" without one); "holdout" for the holdout row')
    holdout: bool = Field(False, description="the campaign's holdout records: recorded, never delivered")
    sent: int = Field(description="delivered messages (0 for the holdout row)")
    holdout_records: int = Field(0, description="holdout records (0 for a delivered row)")
    visitors: int = Field(0, description="distinct visitors of those messages or records")
    shown: int = Field(0, description="messages with a message_shown outcome from their visitor")
    clicked: int = Field(0, description="messages with a message_clicked outcome")
    dismissed: int = Field(0, description="messages with a message_dismissed outcome")
    converted: int = Field(
        description="messages or records the engine attributed a purchase to (last touch within the "
        "attribution window)"
    )
    revenue: float = Field(description="the values of those purchases")
    conversion_rate: float = Field(description="converted / (sent + holdout_records)")
    uplift: float | None = Field(
        None,
        description="conversion rate minus the campaign's holdout row's (absolute); null for the holdout "
        "row and without one",
    )
    uplift_relative: float | None = Field(
        None, description="uplift / the holdout row's conversion rate; null unless that rate is > 0"
    )


class TopValue(_Row):
    value: str
    visitors: int


class Persona(_Row):
    """Who is in one segment, from the events made while in it (bots excluded)."""

    segment: str
    members: int
    share: float = Field(description="members / every visitor seen")
    visitors: int = Field(description="distinct visitors with events while in the segment")
    breakdowns: dict[str, list[TopValue]] = Field(
        default_factory=dict,
        description="categories, products, devices, os, regions, cities, traffic_sources: top values",
    )
    purchases: int = 0
    revenue: float = 0.0
    average_order_value: float = 0.0
    recency_days: float = Field(
        0.0, description="median days from a visitor's latest event to the newest event"
    )
    frequency_sessions: float = Field(0.0, description="average sessions per visitor")
    kpis: SegmentKpis | None = None


class Recommendation(_Row):
    rule: str = Field(description="id of the rule in streams/report.py that made it")
    text: str


class PersonaReport(BaseModel):
    """Version 1: every segment with members, the baseline `*` first."""

    schema_version: Literal[1] = 1
    generated_at: datetime
    definition_version: str
    personas: list[Persona]
    descriptions: dict[str, str] = Field(default_factory=dict, description="segment → its description")


class LiveSize(_Row):
    segment: str
    members: int = Field(description="members in the serving store (Redis) now")


class WorkerHealth(_Row):
    """The answering worker's own figures (other workers report theirs)."""

    records: int
    dead_letters: int
    lag: int = Field(description="records behind the high watermark, over the worker's partitions")
    partitions: list[int]


class DashboardAnswer(BaseModel):
    """Version 2: what `/dashboard` draws. Version 2 changed the funnel's rows (`FunnelRow`)."""

    schema_version: Literal[2] = 2
    generated_at: datetime
    start: datetime
    end: datetime
    bucket_minutes: int
    definition_version: str
    live_sizes: list[LiveSize]
    flows: dict[str, list[FlowPoint]] = Field(description="segment → sizes, entries and exits per bucket")
    kpis: list[SegmentKpis]
    funnel: list[FunnelRow]
    health: WorkerHealth


class ExportManifest(BaseModel):
    """Version 1: what one `tessera export` wrote."""

    schema_version: Literal[1] = 1
    kind: Literal["members", "kpis", "events"]
    format: Literal["csv", "parquet"]
    file: str
    rows: int
    columns: list[str]
    query: str = Field(description="the SQL that produced the rows, parameters substituted by ClickHouse")
    parameters: dict[str, str | int]
    started_at: datetime
    finished_at: datetime
