"""What the dashboard, the persona report and the exports exchange (version 1).

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
    """One campaign (trigger rule) and variant of the message funnel."""

    campaign: str
    kind: str
    variant: str = Field(description='payload.variant of the messages; "" when they carry none')
    sent: int
    converted: int = Field(description="messaged visitors who purchased within the attribution window")
    revenue: float
    conversion_rate: float
    uplift: float | None = Field(
        None, description="conversion rate minus the campaign's holdout variant's; null without a holdout"
    )
    shown: int | None = Field(
        None, description="null until outcome events carry their message id in ClickHouse"
    )
    clicked: int | None = None
    dismissed: int | None = None


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
    """Version 1: what `/dashboard` draws."""

    schema_version: Literal[1] = 1
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
