"""The plan of a simulation: one `VisitorSpec` per visitor, all drawn from the master generator."""

from __future__ import annotations

from collections.abc import Mapping
from random import Random

from streams.simulate import micro
from streams.simulate.devices import DEVICES
from streams.simulate.draws import uuid4, weighted
from streams.simulate.params import SimParams
from streams.simulate.places import LOCALES, PLACE_WEIGHTS, load_places
from streams.simulate.spec import VisitorSpec
from streams.simulate.targets import PERSONAS, SegmentTargets


def persona_counts(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Visitors per persona: `mix` normalised, rounded by largest remainder (ties: `PERSONAS` order)."""
    unknown = set(mix) - set(PERSONAS)
    if unknown:
        raise ValueError(f"unknown personas in mix: {sorted(unknown)}")
    total = sum(max(0.0, mix.get(p, 0.0)) for p in PERSONAS)
    if total <= 0:
        raise ValueError("the persona mix is empty")
    exact = {p: n * max(0.0, mix.get(p, 0.0)) / total for p in PERSONAS}
    counts = {p: int(v) for p, v in exact.items()}
    rest = n - sum(counts.values())
    for p in sorted(PERSONAS, key=lambda p: (-(exact[p] - counts[p]), PERSONAS.index(p)))[:rest]:
        counts[p] += 1
    return counts


def plan(visitors: int, master: Random, params: SimParams, targets: SegmentTargets) -> list[VisitorSpec]:
    """Personas in shuffled order, ids, seeds, places, devices; then the micro-segments planted."""
    counts = persona_counts(visitors, params.mix)
    personas = [p for p in PERSONAS for _ in range(counts[p])]
    master.shuffle(personas)
    places = load_places()
    place_names = sorted({p.place for p in places}, key=list(PLACE_WEIGHTS).index)
    by_place = {name: [p for p in places if p.place == name] for name in place_names}
    categories = list(targets.top_spender_thresholds)
    specs: list[VisitorSpec] = []
    for i, persona in enumerate(personas):
        visitor_id = uuid4(master)
        seed = master.getrandbits(64)
        place = master.choice(by_place[weighted(master, ((n, PLACE_WEIGHTS[n]) for n in place_names))])
        device = weighted(master, ((d, d.weight) for d in DEVICES))
        consent = master.random() >= params.no_consent_share
        spec = VisitorSpec(
            index=i,
            visitor_id=visitor_id,
            seed=seed,
            persona=persona,
            place=place,
            device=device,
            screen=master.choice(device.screens),
            locale=master.choice(LOCALES.get(place.country, ("en-US",))),
            consent=consent,
            category=master.choice(categories) if persona == "big_spender" else None,
        )
        specs.append(spec)
    per_segment = max(params.micro_min, round(visitors * params.micro_share))
    micro.plant(specs, master, places, per_segment)
    return specs
