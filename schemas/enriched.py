"""An event after ingest: validated, enriched with device, geo and traffic source."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.events import Event

DeviceCategory = Literal["desktop", "mobile", "tablet", "bot", "other"]
TrafficSource = Literal["search", "social", "email", "campaign", "referral", "internal", "direct"]


class Device(BaseModel):
    model_config = ConfigDict(frozen=True)

    category: DeviceCategory = "other"
    os: str | None = None
    os_version: str | None = None
    browser: str | None = None
    browser_version: str | None = None


class Geo(BaseModel):
    model_config = ConfigDict(frozen=True)

    country: str | None = None
    """ISO 3166-1 alpha-2, e.g. "CH"."""
    region: str | None = None
    """Region / state name as the database spells it, e.g. "North Rhine-Westphalia"."""
    region_code: str | None = None
    """ISO 3166-2 subdivision code when known, e.g. "NW" (Germany), "BY"."""
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    source: Literal["client", "ip", "none"] = "none"


class Traffic(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: TrafficSource = "direct"
    """Kind of source: search, social, email, campaign, referral, internal, direct."""
    name: str | None = None
    """Who sent the visit, e.g. "google", "facebook", "newsletter", a referring host."""
    medium: str | None = None
    campaign: str | None = None


class EnrichedEvent(BaseModel):
    """Version 1 of the enriched event; the row source for ClickHouse's `events` table."""

    model_config = ConfigDict(frozen=False)

    schema_version: Literal[1] = 1
    event: Event
    device: Device
    geo: Geo
    traffic: Traffic
    received_at: datetime
    partition: int = -1
    offset: int = -1
