"""What changed between two definitions, as readable lines (`tessera segments diff`). Pure.

Sections in file order: version, timezone, params, attributes, cohorts, segments, triggers, campaigns,
guard rails, journeys. A segment whose
condition is written the same but reads a changed param, attribute or cohort is reported as changed,
with what it reads that changed: its members can change as much as if its condition had been
rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from streams.core.attributes import AttributeDef, base_name
from streams.core.definitions import CohortDef, Definitions, SegmentDef, TriggerRule
from streams.core.journey_defs import CampaignDef, JourneyDef, Step

__all__ = ["diff_definitions"]

T = TypeVar("T")


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _attribute(attr: AttributeDef) -> str:
    what = f"{attr.kind} of {attr.key}" + (f" / {attr.denominator}" if attr.denominator else "")
    return f"{what} over {attr.window.text}"


def _cohort(cohort: CohortDef) -> str:
    return f"quantile {cohort.quantile:g} of {cohort.of}"


def _segment_fields(seg: SegmentDef) -> dict[str, str]:
    return {
        "when": seg.when.written or seg.when.source,
        "recheck": ", ".join(f"{r.after} + {r.delay_s:g}s" for r in seg.rechecks) or "-",
        "description": seg.description,
    }


def _trigger_fields(rule: TriggerRule) -> dict[str, str]:
    return {
        "on": f"{rule.on} {', '.join(sorted(rule.targets))}",
        "when": (rule.when.written or rule.when.source) if rule.when is not None else "-",
        "send": f"{rule.kind} via {rule.channel}",
        "payload": _value(dict(rule.payload)),
        "compute": _value({name: e.written or e.source for name, e in rule.compute.items()}),
        "cap": "-" if rule.cap_s is None else f"{rule.cap_s:g}s",
        "ttl": "-" if rule.ttl_s is None else f"{rule.ttl_s:g}s",
        "campaign": rule.campaign or "-",
        "description": rule.description,
    }


def _campaign_fields(campaign: CampaignDef) -> dict[str, str]:
    return {
        "when": (campaign.when.written or campaign.when.source) if campaign.when is not None else "-",
        "schedule": _value(campaign.schedule),
        "budget": _value(campaign.budget),
        "cap": _value(campaign.cap),
        "holdout": f"{campaign.holdout:g}",
        "variants": _value(
            {v.name: {"share": v.share, "payload": dict(v.payload)} for v in campaign.variants}
        ),
        "description": campaign.description,
    }


def _step(step: Step) -> str:
    if step.action == "send" and step.send is not None:
        what = f"send {step.send.kind} via {step.send.channel} {_value(dict(step.send.payload))}"
    elif step.action == "wait":
        what = f"wait {step.wait_s:g}s" + (
            f" until {sorted(step.until)} → {step.on_until}" if step.until else ""
        )
    elif step.action == "branch":
        what = "branch " + "; ".join(f"{c.written or c.source} → {t}" for c, t in step.branches)
        what += f"; else → {step.otherwise}"
    else:
        what = "end"
    return what + (f" → {step.next}" if step.action in ("send", "wait") else "")


def _journey_fields(journey: JourneyDef) -> dict[str, str]:
    exits = sorted(journey.exit_events) + (["opt_out"] if journey.exit_opt_out else [])
    exits += [f"exit {s}" for s in sorted(journey.exit_segments)]
    return {
        "entry": f"{journey.entry} {', '.join(sorted(journey.entry_targets))}",
        "exit_on": ", ".join(exits) or "-",
        "campaign": journey.campaign or "-",
        "reentry": f"{journey.reentry_s:g}s",
        "steps": ", ".join(s.id for s in journey.steps),
        **{f"step {s.id}": _step(s) for s in journey.steps},
        "description": journey.description,
    }


def _journey_changes(_name: str, a: JourneyDef, b: JourneyDef) -> list[str]:
    """Field by field and step by step (a step only one side has reads ``-`` on the other)."""
    old, new = _journey_fields(a), _journey_fields(b)
    found = [f"{key}: {old.get(key, '-')} → {value}" for key, value in new.items() if old.get(key) != value]
    return found + [f"{key}: {value} → -" for key, value in old.items() if key not in new]


def _section(
    title: str,
    old: Mapping[str, T],
    new: Mapping[str, T],
    describe: Callable[[T], str],
    changes: Callable[[str, T, T], list[str]],
) -> list[str]:
    """Lines for the names only `new` has, only `old` has, and in both with `changes`."""
    lines: list[str] = []
    for name in new:
        if name not in old:
            lines.append(f"  + {name}: {describe(new[name])}")
    for name in old:
        if name not in new:
            lines.append(f"  - {name}: {describe(old[name])}")
    for name in new:
        if name in old:
            found = changes(name, old[name], new[name])
            if found:
                lines.append(f"  ~ {name}:")
                lines += [f"      {line}" for line in found]
    return [f"{title}:", *lines] if lines else []


def _field_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    return [f"{key}: {old[key]} → {new[key]}" for key in new if old.get(key) != new[key]]


def diff_definitions(old: Definitions, new: Definitions) -> list[str]:
    """What `new` changes against `old`, one line each (``+`` added, ``-`` removed, ``~`` changed);
    empty when they define the same."""
    lines: list[str] = []
    if old.version != new.version:
        lines.append(f"version: {_value(old.version)} → {_value(new.version)}")
    if old.zone != new.zone:
        lines.append(f"timezone: {old.zone} → {new.zone}")
    lines += _section(
        "params",
        old.params,
        new.params,
        _value,
        lambda _n, a, b: [] if a == b else [f"{_value(a)} → {_value(b)}"],
    )
    changed_attributes = {
        name
        for name, attr in new.attributes.items()
        if name in old.attributes and _attribute(old.attributes[name]) != _attribute(attr)
    }
    lines += _section(
        "attributes",
        old.attributes,
        new.attributes,
        _attribute,
        lambda _n, a, b: [] if _attribute(a) == _attribute(b) else [f"{_attribute(a)} → {_attribute(b)}"],
    )
    changed_cohorts = {
        cohort.group
        for name, cohort in new.cohorts.items()
        if name in old.cohorts and _cohort(old.cohorts[name]) != _cohort(cohort)
    }
    lines += _section(
        "cohorts",
        old.cohorts,
        new.cohorts,
        _cohort,
        lambda _n, a, b: [] if _cohort(a) == _cohort(b) else [f"{_cohort(a)} → {_cohort(b)}"],
    )

    def segment_changes(_name: str, a: SegmentDef, b: SegmentDef) -> list[str]:
        found = _field_changes(_segment_fields(a), _segment_fields(b))
        reads = sorted({base_name(v) for v in b.when.variables} & changed_attributes)
        if reads:
            found.append(f"reads changed attributes: {', '.join(reads)}")
        cohorts = sorted({base_name(v) for v in b.when.variables} & changed_cohorts)
        if cohorts:
            found.append(f"reads changed cohorts: {', '.join(cohorts)}")
        if a.when.written == b.when.written and a.when.source != b.when.source:
            found.append(f"condition as run: {a.when.source} → {b.when.source} (params or constants)")
        return found

    lines += _section(
        "segments",
        {seg.id: seg for seg in old.segments},
        {seg.id: seg for seg in new.segments},
        lambda seg: f"when {_segment_fields(seg)['when']}",
        segment_changes,
    )
    lines += _section(
        "triggers",
        {rule.id: rule for rule in old.triggers},
        {rule.id: rule for rule in new.triggers},
        lambda rule: f"on {_trigger_fields(rule)['on']}, send {_trigger_fields(rule)['send']}",
        lambda _n, a, b: _field_changes(_trigger_fields(a), _trigger_fields(b)),
    )
    lines += _section(
        "campaigns",
        old.campaigns,
        new.campaigns,
        lambda c: f"holdout {c.holdout:g}, {len(c.variants)} variants",
        lambda _n, a, b: _field_changes(_campaign_fields(a), _campaign_fields(b)),
    )
    if _value(old.guardrails) != _value(new.guardrails):
        lines.append(f"guardrails: {_value(old.guardrails)} → {_value(new.guardrails)}")
    lines += _section(
        "journeys",
        {j.id: j for j in old.journeys},
        {j.id: j for j in new.journeys},
        lambda j: f"entry {_journey_fields(j)['entry']}, {len(j.steps)} steps",
        _journey_changes,
    )
    return lines
