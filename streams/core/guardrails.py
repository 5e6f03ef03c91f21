"""Guard rails: may this message go to this visitor now? (pure; values in, values out)

Every message of triggers and journeys passes `screen` (called by `streams.core.batch`), in this
order; the first rule that refuses decides:

1. campaign audience: the campaign's ``when`` (checked by the caller, which holds the CEL context);
2. campaign schedule: weekdays, hour ranges, a date range, in the campaign's zone — outside it the
   message is refused with ``retry_at`` = the schedule's next opening (a journey step waits for it;
   a one-shot trigger drops the message);
3. quiet hours (``guardrails: quiet_hours``) in the visitor's time zone (`visitor_zone`: from the
   visitor's country, else the definitions' zone) — refused with ``retry_at`` = their end;
4. holdout: a visitor of the campaign's holdout group gets a record (``holdout: true``, cost 0) that
   no channel delivers, so uplift can be computed; caps and budget do not count it;
5. frequency caps per visitor and channel (``guardrails: caps``) and per visitor and campaign
   (the campaign's ``cap``), hour / day / week, sliding, over the visitor's sent history
   (`SentRecord`s in the profile's journey state);
6. daily budget per campaign: the message's cost must fit in ``daily - spent today``.

Holdout and A/B variants are assigned deterministically: a hash of visitor id and campaign id
(`assignment`), so every worker and every replay assigns the same.

The budget is a shared counter; this module decides from "spent today" as an input and never
keeps it. `BudgetLedger` is the counter the worker keeps: in memory, per worker, per campaign and
local day. Its limits, stated and not hidden: (a) with several workers each has its own ledger, so
each may spend its `share` of the daily budget (`settings.budget_share`, 1.0 for one worker; set
1/N for N workers — traffic skewed to one worker's partitions then under-spends); (b) a restarted
worker starts the day's ledger at 0, so after a crash a campaign may overspend by what was spent
before it; (c) a replayed batch after a crash may decide differently near the limit. An exact
global budget needs an atomic counter at the edge (a Redis ``INCRBYFLOAT`` per campaign and day
before publishing); not built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from streams.core.journey_defs import CampaignDef, Caps, Guardrails, QuietHours, Schedule
from streams.core.windows import zone_of

__all__ = [
    "COUNTRY_ZONES",
    "BudgetLedger",
    "SentRecord",
    "Verdict",
    "assignment",
    "budget_day",
    "caps_allow",
    "in_schedule",
    "next_opening",
    "quiet_end",
    "screen",
    "unit_hash",
    "visitor_zone",
]

COUNTRY_ZONES: Mapping[str, str] = {
    "DE": "Europe/Berlin", "AT": "Europe/Vienna", "CH": "Europe/Zurich", "NL": "Europe/Amsterdam",
    "BE": "Europe/Brussels", "LU": "Europe/Luxembourg", "FR": "Europe/Paris", "IT": "Europe/Rome",
    "ES": "Europe/Madrid", "PT": "Europe/Lisbon", "GB": "Europe/London", "IE": "Europe/Dublin",
    "DK": "Europe/Copenhagen", "SE": "Europe/Stockholm", "NO": "Europe/Oslo", "FI": "Europe/Helsinki",
    "PL": "Europe/Warsaw", "CZ": "Europe/Prague", "HU": "Europe/Budapest", "GR": "Europe/Athens",
    "TR": "Europe/Istanbul", "JP": "Asia/Tokyo", "IN": "Asia/Kolkata", "SG": "Asia/Singapore",
}  # fmt: skip
"""Countries with one time zone. A visitor from elsewhere (or a country spanning several zones,
like the US) is in the definitions' zone: a known limit of country-level geo."""


@dataclass(frozen=True, slots=True)
class SentRecord:
    """One message the visitor got (or, held out, would have got), as the profile keeps it for caps
    and attribution: ``[at, channel, campaign, message_id, rule, variant, holdout, journey, step,
    converted]`` in the profile's journey state (`to_row` / `of_row`)."""

    at: float
    channel: str
    campaign: str | None
    message_id: str
    rule: str
    variant: str | None = None
    holdout: bool = False
    journey: str | None = None
    step: str | None = None
    converted: bool = False

    def to_row(self) -> list[Any]:
        return [
            self.at, self.channel, self.campaign, self.message_id, self.rule, self.variant,
            self.holdout, self.journey, self.step, self.converted,
        ]  # fmt: skip

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> SentRecord:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str | None = None
    """Why not: ``schedule``, ``quiet_hours``, ``channel_cap``, ``campaign_cap``, ``budget``."""
    retry_at: float | None = None
    """When the same message may go (schedule, quiet hours); None: not by waiting."""
    holdout: bool = False
    variant: str | None = None
    cost: float = 0.0


@dataclass(slots=True)
class BudgetLedger:
    """The worker's spend per (campaign, local day): the shared counter `screen` reads (see the
    module docstring for its limits). `share` scales every campaign's daily budget for this worker."""

    share: float = 1.0
    spent: dict[tuple[str, str], float] = field(default_factory=dict)

    def spent_on(self, campaign: str, day: str) -> float:
        return self.spent.get((campaign, day), 0.0)

    def add(self, campaign: str, day: str, cost: float) -> None:
        self.spent[(campaign, day)] = self.spent.get((campaign, day), 0.0) + cost
        if len(self.spent) > 4096:  # old days are never read again
            for key in sorted(self.spent, key=lambda k: k[1])[: len(self.spent) - 2048]:
                del self.spent[key]


def unit_hash(*parts: str) -> float:
    """A number in [0, 1) from `parts`, the same on every worker and run (sha256)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assignment(visitor_id: str, campaign: CampaignDef) -> tuple[bool, str | None]:
    """(in the holdout group, A/B variant) of a visitor in `campaign`: deterministic per visitor
    and campaign; the variant is drawn independently of the holdout, so the variants' shares hold
    among the messaged visitors too."""
    holdout = campaign.holdout > 0.0 and unit_hash(visitor_id, campaign.id, "holdout") < campaign.holdout
    if not campaign.variants:
        return holdout, None
    u = unit_hash(visitor_id, campaign.id, "variant")
    total = 0.0
    for variant in campaign.variants:
        total += variant.share
        if u < total:
            return holdout, variant.name
    return holdout, campaign.variants[-1].name


def visitor_zone(country: str | None, default_zone: str) -> str:
    return COUNTRY_ZONES.get(country or "", default_zone)


def _local(now: float, zone: str) -> datetime:
    return datetime.fromtimestamp(now, zone_of(zone))


def _in_range(minute: int, start: int, end: int) -> bool:
    return start <= minute < end if start <= end else minute >= start or minute < end


def quiet_end(quiet: QuietHours, channel: str, now: float, zone: str) -> float | None:
    """The end of the quiet hours `now` falls in, for `channel` in `zone`; None when not quiet."""
    if channel not in quiet.channels:
        return None
    local = _local(now, zone)
    minute = local.hour * 60 + local.minute
    if not _in_range(minute, quiet.start_min, quiet.end_min):
        return None
    ends = local.replace(hour=quiet.end_min // 60 % 24, minute=quiet.end_min % 60, second=0, microsecond=0)
    if ends <= local:
        ends += timedelta(days=1)
    return ends.timestamp()


def in_schedule(schedule: Schedule, now: float) -> bool:
    local = _local(now, schedule.zone)
    day = local.date()
    if (schedule.start_date and day < schedule.start_date) or (schedule.end_date and day > schedule.end_date):
        return False
    if local.isoweekday() not in schedule.weekdays:
        return False
    minute = local.hour * 60 + local.minute
    return any(start <= minute < end for start, end in schedule.hours)


def next_opening(schedule: Schedule, now: float) -> float | None:
    """The first moment at or after `now` the schedule is open; None when it never is again."""
    zone = zone_of(schedule.zone)
    local = datetime.fromtimestamp(now, zone)
    for offset in range(0, 400):
        day: date = local.date() + timedelta(days=offset)
        if schedule.end_date and day > schedule.end_date:
            return None
        if (schedule.start_date and day < schedule.start_date) or day.isoweekday() not in schedule.weekdays:
            continue
        for start, end in sorted(schedule.hours):
            opens = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(minutes=start)
            closes = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(minutes=end)
            if closes.timestamp() <= now:
                continue
            return max(opens.timestamp(), now)
    return None


def budget_day(now: float, zone: str) -> str:
    """The local day a spend counts for (``2026-12-04``)."""
    return _local(now, zone).date().isoformat()


def caps_allow(
    sent: Sequence[SentRecord],
    caps: Caps,
    now: float,
    channel: str | None = None,
    campaign: str | None = None,
) -> bool:
    """Whether one more message fits `caps`, counting the delivered (not held-out) records of
    `channel` (or of `campaign`) in each sliding window before `now`."""
    for window_s, limit in caps.limits():
        count = 0
        for record in sent:
            if record.holdout or now - record.at >= window_s or record.at > now:
                continue
            if (channel is None or record.channel == channel) and (
                campaign is None or record.campaign == campaign
            ):
                count += 1
        if count >= limit:
            return False
    return True


def screen(
    *,
    visitor_id: str,
    channel: str,
    campaign: CampaignDef | None,
    guardrails: Guardrails,
    now: float,
    visitor_zone_name: str,
    sent: Sequence[SentRecord],
    spent_today: float,
    budget_share: float = 1.0,
) -> Verdict:
    """Rules 2–6 of the module docstring for one message on `channel` at `now` (the caller checked
    consent and the campaign's audience). `spent_today`: the campaign's spend of its budget day."""
    if campaign is not None and campaign.schedule is not None and not in_schedule(campaign.schedule, now):
        return Verdict(False, "schedule", next_opening(campaign.schedule, now))
    quiet = guardrails.quiet_hours
    if quiet is not None and (ends := quiet_end(quiet, channel, now, visitor_zone_name)) is not None:
        return Verdict(False, "quiet_hours", ends)
    holdout, variant = assignment(visitor_id, campaign) if campaign is not None else (False, None)
    if holdout:
        return Verdict(True, holdout=True, variant=variant)
    channel_caps = guardrails.channel_caps.get(channel)
    if channel_caps is not None and not caps_allow(sent, channel_caps, now, channel=channel):
        return Verdict(False, "channel_cap")
    if campaign is None:
        return Verdict(True)
    if campaign.cap is not None and not caps_allow(sent, campaign.cap, now, campaign=campaign.id):
        return Verdict(False, "campaign_cap", variant=variant)
    cost = 0.0
    if campaign.budget is not None:
        cost = campaign.budget.cost_per_message
        if spent_today + cost > campaign.budget.daily * budget_share + 1e-9:
            return Verdict(False, "budget", variant=variant)
    return Verdict(True, variant=variant, cost=cost)
