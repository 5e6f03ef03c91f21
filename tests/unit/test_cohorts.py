"""Cohort-relative conditions: the loader's refusals (line and column), evaluation with given
thresholds (+infinity while unknown), the batch's recorded values and sketch moves, the re-evaluation
of a cohort's population when its threshold moves (reason ``cohort``), and the cohorts topic: sketches
published at the checkpoint after the changelog, merged by every worker into thresholds."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import TopicPartition

from schemas.cohorts import CohortSketchRecord, cohort_key
from streams.checkpoint import Checkpoint
from streams.cohorts import CohortBoard, CohortWatcher, read_board, rebuild, sketch_record
from streams.core.batch import BatchResult, IngestLimits, SourceRecord, process_batch, reevaluate
from streams.core.definitions import DefinitionError, Definitions, parse_definitions
from streams.core.definitions_diff import diff_definitions
from streams.core.dependencies import Changes
from streams.core.profile import DAY_S, Profile
from streams.core.segments import evaluate, next_check_at, preview
from streams.core.sketch import PartitionCohorts, QuantileSketch
from streams.profile_store import PartitionState, ProfileStore
from streams.recovery import ChangelogConsumer
from streams.settings import Settings
from streams.stats import EngineStats
from streams.testing.fakes import (
    CallLog,
    FakeAnalyticsSink,
    FakeConsumer,
    FakeProducer,
    FakeServingStore,
    FakeTopicProducer,
    fixed_enricher,
)

DEFINITIONS = """\
version: "c1"
attributes:
  spend_365d: {metric: spend, by: category, window: 365d}
  purchases_30d: {metric: purchases, window: 30d}
  views_30d: {metric: product_views, window: 30d}
cohorts:
  spend_p95: {attribute: spend_365d, key: [electronics, clothing], quantile: 0.95}
  orders_p90: {attribute: purchases_30d, quantile: 0.9}
segments:
  - id: top_{category}
    description: top 5 % of {category} spenders
    for_each: {category: [electronics, clothing]}
    when: spend_365d[category] > 0 && spend_365d[category] >= spend_p95[category]
  - id: many_orders
    description: top 10 % by orders
    when: purchases_30d > 0 && purchases_30d >= orders_p90
  - id: viewer
    description: looked at something
    when: views_30d >= 1
"""
DEFS = parse_definitions(DEFINITIONS)
ELECTRONICS, ORDERS = "spend_p95[electronics]", "orders_p90"
BASE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp()


# -- the loader ------------------------------------------------------------------------------------------


def test_cohorts_load_as_scalar_and_map_thresholds() -> None:
    assert sorted(DEFS.cohorts) == ["orders_p90", "spend_p95[clothing]", "spend_p95[electronics]"]
    electronics = DEFS.cohorts[ELECTRONICS]
    assert (electronics.group, electronics.key, electronics.quantile, electronics.of) == (
        "spend_p95",
        "electronics",
        0.95,
        "spend_365d[electronics]",
    )
    assert DEFS.cohorts[ORDERS].of == "purchases_30d" and DEFS.cohorts[ORDERS].var == "orders_p90"
    # A change reports the threshold beside the value it was compared with.
    assert [label for _, label in DEFS.segment("top_electronics").read_labels] == [
        "spend_365d.electronics",
        "spend_p95.electronics",
    ]
    single = parse_definitions(
        DEFINITIONS.replace("key: [electronics, clothing]", "key: electronics").replace(
            "spend_p95[category]", "spend_p95"
        )
    )
    assert single.cohorts["spend_p95"].var == "spend_p95" and single.cohorts["spend_p95"].key == "electronics"


def refused(text: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(text, "d.yaml")
    return caught.value


def with_cohorts(lines: str, when: str = "purchases_30d >= 1") -> str:
    """A file whose ``cohorts:`` section is `lines` (line 6 on) and whose one segment reads `when`."""
    return (
        'version: "1"\n'
        "attributes:\n"
        "  spend_365d: {metric: spend, by: category, window: 365d}\n"
        "  purchases_30d: {metric: purchases, window: 30d}\n"
        "cohorts:\n"
        + textwrap.indent(textwrap.dedent(lines).strip("\n"), "  ")
        + "\nsegments:\n  - id: s\n    description: d\n    when: "
        + when
        + "\n"
    )


@pytest.mark.parametrize(
    ("lines", "when", "place", "reason"),
    [
        (
            "p95: {attribute: spend_356d, key: tv, quantile: 0.95}",
            "purchases_30d >= 1",
            (6, 20),
            "cohort 'p95': unknown attribute 'spend_356d' (did you mean 'spend_365d'?)",
        ),
        (
            "p90: {attribute: purchases_30d, key: tv, quantile: 0.9}",
            "purchases_30d >= 1",
            (6, 35),
            "cohort 'p90': attribute 'purchases_30d' is not a map: it takes no key",
        ),
        (
            "p95: {attribute: spend_365d, quantile: 0.95}",
            "purchases_30d >= 1",
            (6, 8),
            "cohort 'p95': attribute 'spend_365d' is a map: name its key",
        ),
        (
            "p95: {attribute: spend_365d, key: tv, quantile: 1.0}",
            "purchases_30d >= 1",
            (6, 51),
            "cohort 'p95': quantile must be a number between 0 and 1, exclusive",
        ),
        (
            "p95: {attribute: spend_365d, key: tv, quantile: 0}",
            "purchases_30d >= 1",
            (6, 51),
            "quantile must be a number between 0 and 1",
        ),
        (
            "p95: {attribute: spend_365d, key: tv, quantile: high}",
            "purchases_30d >= 1",
            (6, 51),
            "quantile must be a number between 0 and 1",
        ),
        (
            "p95: {attribute: spend_365d, key: tv}",
            "purchases_30d >= 1",
            (6, 8),
            "cohort 'p95': missing 'quantile'",
        ),
        (
            "purchases_30d: {attribute: purchases_30d, quantile: 0.9}",
            "purchases_30d >= 1",
            (6, 3),
            "cohort 'purchases_30d': clashes with the attribute of that name",
        ),
        (
            "country: {attribute: purchases_30d, quantile: 0.9}",
            "purchases_30d >= 1",
            (6, 3),
            "cohort 'country': clashes with the built-in fact of that name",
        ),
        (
            "p90: {attribute: purchases_30d, quantile: 0.9, over: all}",
            "purchases_30d >= 1",
            (6, 50),
            "cohort 'p90': unknown key 'over'",
        ),
        (
            "p95: {attribute: spend_365d, key: [tv, tv], quantile: 0.95}",
            "purchases_30d >= 1",
            (6, 42),
            "cohort 'p95': key 'tv' is empty or given twice",
        ),
        (
            "p95: {attribute: spend_365d, key: [tv, radio], quantile: 0.95}",
            'spend_365d["tv"] >= p95["toys"]',
            (10, 31),
            "segment 's': when: cohort 'p95' has no key 'toys' (keys: radio, tv)",
        ),
        (
            "p90: {attribute: purchases_30d, quantile: 0.9}",
            "purchases_30d >= p09",
            (10, 28),
            "segment 's': when: unknown identifier 'p09' (did you mean 'p90'?)",
        ),
    ],
)
def test_refusals_name_line_and_column(lines: str, when: str, place: tuple[int, int], reason: str) -> None:
    error = refused(with_cohorts(lines, when))
    assert (error.line, error.column) == place, str(error)
    assert reason in error.message, str(error)


def test_a_cohort_clashing_with_a_param_is_refused() -> None:
    text = with_cohorts("p90: {attribute: purchases_30d, quantile: 0.9}").replace(
        "attributes:\n", "params:\n  p90: 3\nattributes:\n"
    )
    error = refused(text)
    assert (error.line, error.column) == (8, 3) and "clashes with the param of that name" in error.message


def test_a_cohort_over_a_non_number_is_refused() -> None:
    text = with_cohorts("top: {attribute: top_category_90d, quantile: 0.5}").replace(
        "attributes:\n",
        "attributes:\n  top_category_90d: {event: product_view, agg: top, field: category, window: 90d}\n",
    )
    error = refused(text)
    assert (error.line, error.column) == (7, 20)
    assert "attribute 'top_category_90d' gives a string, not a number" in error.message


# -- evaluation ------------------------------------------------------------------------------------------


def spender(electronics: float = 0.0, purchases: int = 0, views: int = 0, visitor_id: str = "v") -> Profile:
    today = int(BASE // DAY_S)
    bucket: dict[str, float] = {"purchases": purchases, "product_views": views}
    if electronics:
        bucket["spend@electronics"] = electronics
    return Profile(visitor_id=visitor_id, days={today - 3: bucket}, last_seen=BASE - 3 * DAY_S)


def test_conditions_read_the_given_thresholds_and_infinity_while_unknown() -> None:
    profile = spender(electronics=500.0, purchases=2)
    assert evaluate(profile, DEFS, BASE).members == frozenset()  # no threshold known: nobody is top
    known = DEFS.cohort_thresholds({ELECTRONICS: 400.0, ORDERS: 2.0})
    assert known is not None and known["orders_p90"] == 2.0
    assert math.isinf(known[DEFS.cohorts["spend_p95[clothing]"].var])
    assert evaluate(profile, DEFS, BASE, known=known).members == {"top_electronics", "many_orders"}
    higher = DEFS.cohort_thresholds({ELECTRONICS: 600.0, ORDERS: 3.0})
    assert evaluate(profile, DEFS, BASE, known=higher).members == frozenset()
    # The population is the spenders: a threshold of 0 makes no non-spender "top".
    assert (
        "top_electronics"
        not in evaluate(spender(), DEFS, BASE, known=DEFS.cohort_thresholds({ELECTRONICS: 0.0})).members
    )


def test_a_cohort_attribute_slides_out_of_its_window_by_timer_even_unread_by_segments() -> None:
    text = DEFINITIONS.replace(
        "  - id: many_orders\n    description: top 10 % by orders\n"
        "    when: purchases_30d > 0 && purchases_30d >= orders_p90\n",
        "",
    )
    defs = parse_definitions(text)
    profile = spender(purchases=2)  # purchases_30d is read by no segment now, only by orders_p90
    assert next_check_at(profile, defs, BASE) == (int(BASE // DAY_S) - 3) * DAY_S + 30 * DAY_S


# -- the batch -------------------------------------------------------------------------------------------


def purchase(offset: int, visitor_id: str, category: str, value: float, at: float) -> SourceRecord:
    event = {
        "event_id": f"e{offset}",
        "visitor_id": visitor_id,
        "event_time": datetime.fromtimestamp(at, UTC).isoformat(),
        "type": "purchase",
        "context": {"ip": "178.197.224.1", "user_agent": "x"},
        "properties": {
            "order_id": f"o{offset}",
            "value": value,
            "items": [{"product_id": "P-1", "category": category, "price": value}],
        },
    }
    return SourceRecord(offset % 2, offset, visitor_id.encode(), orjson.dumps(event))


def view(offset: int, visitor_id: str, at: float) -> SourceRecord:
    event = {
        "event_id": f"e{offset}",
        "visitor_id": visitor_id,
        "event_time": datetime.fromtimestamp(at, UTC).isoformat(),
        "type": "product_view",
        "context": {"ip": "178.197.224.1", "user_agent": "x"},
        "properties": {"product_id": "P-1", "category": "electronics", "price": 10.0},
    }
    return SourceRecord(offset % 2, offset, visitor_id.encode(), orjson.dumps(event))


class Partitions:
    """Profiles of the two partitions and their cohort sketches, updated as the engine does."""

    def __init__(self) -> None:
        self.profiles: dict[str, Profile] = {}
        self.cohorts = {0: PartitionCohorts(), 1: PartitionCohorts()}

    def get(self, visitor_id: str, partition: int) -> Profile | None:
        return self.profiles.get(visitor_id)

    def run(self, records: list[SourceRecord], thresholds: Mapping[str, float] | None = None) -> BatchResult:
        result = process_batch(
            records,
            self.get,
            {},
            {0: 0.0, 1: 0.0},
            defs=DEFS,
            enricher=fixed_enricher(),
            limits=IngestLimits(),
            wall_now=BASE + 3600,
            topic="events",
            cohorts=thresholds,
        )
        self.remember(result)
        return result

    def remember(self, result: BatchResult) -> None:
        for visitor_id, effect in result.visitors.items():
            self.profiles[visitor_id] = effect.profile
        for partition, deltas in result.cohort_deltas.items():
            self.cohorts[partition].apply(deltas)

    def merged(self, cohort: str) -> QuantileSketch:
        sketch = QuantileSketch()
        for state in self.cohorts.values():
            if cohort in state.sketches:
                sketch.merge(state.sketches[cohort])
        return sketch


def test_the_batch_records_cohort_values_and_returns_their_moves() -> None:
    parts = Partitions()
    result = parts.run(
        [purchase(0, "a", "electronics", 100.0, BASE), purchase(1, "b", "electronics", 300.0, BASE)]
    )
    assert result.cohort_deltas == {
        0: {ELECTRONICS: [("a", None, 100.0)], ORDERS: [("a", None, 1.0)]},
        1: {ELECTRONICS: [("b", None, 300.0)], ORDERS: [("b", None, 1.0)]},
    }
    assert parts.profiles["a"].cohort_values == {ELECTRONICS: 100.0, ORDERS: 1.0}
    # A later purchase moves a's value: out at 100, in at 150. A view changes no cohort attribute.
    result = parts.run([purchase(2, "a", "electronics", 50.0, BASE + 60), view(4, "a", BASE + 61)])
    assert result.cohort_deltas == {0: {ELECTRONICS: [("a", 100.0, 150.0)], ORDERS: [("a", 1.0, 2.0)]}}
    result = parts.run([view(6, "a", BASE + 120)])
    assert result.cohort_deltas == {}
    # The merged sketch of both partitions is the population's: the values of a and b.
    merged = parts.merged(ELECTRONICS)
    assert merged.count == 2 and merged.quantile(1.0) == pytest.approx(300.0, rel=0.01)
    assert parts.cohorts[0].readers([ELECTRONICS]) == {"a"}


def test_a_threshold_move_re_evaluates_the_population_with_reason_cohort() -> None:
    parts = Partitions()
    parts.run([purchase(i, f"v{i}", "electronics", 100.0 * (i + 1), BASE + i) for i in range(10)])
    threshold = parts.merged(ELECTRONICS).quantile(0.95)
    assert threshold is not None and threshold == pytest.approx(900.0, rel=0.01)  # v8's 900, within 1 %
    visitors = sorted((v, p) for p, state in parts.cohorts.items() for v in state.readers([ELECTRONICS]))
    result = reevaluate(
        visitors,
        parts.get,
        DEFS,
        {0: BASE + 60, 1: BASE + 60},
        wall_now=BASE + 3600,
        reason="cohort",
        cohorts={ELECTRONICS: threshold},
        moved=frozenset({ELECTRONICS}),
    )
    parts.remember(result)
    assert sorted((c.visitor_id, c.segment, c.transition.value, c.reason) for c in result.changes) == [
        ("v9", "top_electronics", "entered", "cohort")
    ]
    assert result.changes[0].attributes == {
        "spend_365d.electronics": 1000.0,
        "spend_p95.electronics": threshold,
    }
    # More big spenders push the threshold up: v9 exits, by the cohort.
    parts.run(
        [purchase(10 + i, f"w{i}", "electronics", 5000.0, BASE + 100 + i) for i in range(4)],
        {ELECTRONICS: threshold},
    )
    higher = parts.merged(ELECTRONICS).quantile(0.95)
    assert higher is not None and higher > 1000.0
    result = reevaluate(
        [("v9", 1)],
        parts.get,
        DEFS,
        {0: BASE + 200, 1: BASE + 200},
        wall_now=BASE + 3600,
        reason="cohort",
        cohorts={ELECTRONICS: higher},
        moved=frozenset({ELECTRONICS}),
    )
    assert [(c.visitor_id, c.segment, c.transition.value, c.reason) for c in result.changes] == [
        ("v9", "top_electronics", "exited", "cohort")
    ]


def test_a_threshold_move_leaves_a_visitor_whose_timer_is_due_to_the_timer() -> None:
    """Its timer's evaluation (every segment, the new thresholds) keeps a time-driven change at its
    own second and reason; a cohort re-evaluation at a later clock would take it first."""
    parts = Partitions()
    parts.run([purchase(i, f"v{i}", "electronics", 100.0 * (i + 1), BASE + i) for i in range(10)])
    profile = parts.get("v9", 1)
    assert profile is not None and profile.next_check_at is not None
    due = profile.next_check_at
    result = reevaluate(
        [("v9", 1)],
        parts.get,
        DEFS,
        {0: due, 1: due},
        wall_now=due + 1,
        reason="cohort",
        cohorts={ELECTRONICS: 1.0},
        moved=frozenset({ELECTRONICS}),
    )
    assert result.changes == [] and result.visitors == {}


def test_only_the_segments_reading_a_moved_cohort_are_re_evaluated() -> None:
    """`Changes.cohorts` selects the segments reading the cohort; an event of the visitor's does not
    select them unless it changes the attribute they also read."""
    index = DEFS.dependencies
    assert index is not None
    ids = [seg.id for seg in DEFS.segments]
    assert [ids[i] for i in index.affected(Changes(frozenset(), frozenset(), frozenset({"spend_p95"})))] == [
        "top_electronics",
        "top_clothing",
    ]
    assert [ids[i] for i in index.affected(Changes(frozenset(), frozenset(), frozenset({"orders_p90"})))] == [
        "many_orders"
    ]
    profile = spender(electronics=500.0, purchases=1, views=1)
    profile.definitions_sha, profile.next_check_at = DEFS.source_sha, BASE + DAY_S
    profile.segments = ["viewer"]
    # A stale "viewer" membership is left alone by a cohort re-evaluation: only top_* are evaluated.
    profile.days = {}
    known = DEFS.cohort_thresholds({ELECTRONICS: 400.0})
    evaluation = evaluate(
        profile, DEFS, BASE, changes=Changes(frozenset(), frozenset(), frozenset({"spend_p95"})), known=known
    )
    assert evaluation.members == {"viewer"} and not evaluation.complete


def test_recorded_values_of_a_removed_cohort_move_out() -> None:
    parts = Partitions()
    parts.run([purchase(0, "a", "electronics", 100.0, BASE)])
    without = parse_definitions(
        DEFINITIONS.replace('version: "c1"', 'version: "c2"')
        .replace("  orders_p90: {attribute: purchases_30d, quantile: 0.9}\n", "")
        .replace("purchases_30d > 0 && purchases_30d >= orders_p90", "purchases_30d > 5")
    )
    result = reevaluate([("a", 0)], parts.get, without, {0: BASE + 10}, wall_now=BASE + 3600)
    assert result.cohort_deltas == {0: {ORDERS: [("a", 1.0, None)]}}
    assert "a" in result.visitors and result.visitors["a"].profile.cohort_values == {ELECTRONICS: 100.0}


# -- recovery, the checkpoint and the topic -------------------------------------------------------------


def test_rebuild_counts_the_recorded_values_of_restored_profiles() -> None:
    a, b = (
        Profile("a", cohort_values={ELECTRONICS: 10.0}),
        Profile("b", cohort_values={ELECTRONICS: 20.0, ORDERS: 1.0}),
    )
    state = rebuild([("a", a.to_bytes()), ("b", b), ("c", Profile("c").to_bytes())], 0.01)
    assert state.sketches[ELECTRONICS].count == 2 and state.readers([ORDERS]) == {"b"}
    # A move out of a value a partition never counted (rebuilt without cohorts) only takes the new one in.
    empty = PartitionCohorts()
    empty.move(ELECTRONICS, "a", 10.0, 12.0)
    assert empty.sketches[ELECTRONICS] == QuantileSketch(counts={QuantileSketch().index(12.0): 1})


class FakeCohortWriter:
    def __init__(self, calls: CallLog) -> None:
        self.calls = calls
        self.written: list[tuple[int, str, QuantileSketch]] = []

    async def write(self, sketches: list[tuple[int, str, QuantileSketch]]) -> None:
        self.calls.record("cohorts.write")
        self.written += sketches


async def test_the_checkpoint_publishes_changed_sketches_after_the_changelog() -> None:
    calls = CallLog()
    store = ProfileStore()
    writer = FakeCohortWriter(calls)
    checkpoint = Checkpoint(
        Settings(),
        store,
        FakeAnalyticsSink(calls),
        FakeServingStore(calls),
        FakeProducer(calls),
        lambda: FakeConsumer(calls),
        EngineStats(),
        cohorts=writer,
    )
    state = store.partitions[3] = PartitionState()
    state.profiles["a"] = Profile("a", cohort_values={ELECTRONICS: 10.0})
    checkpoint.touched["a"] = 3
    state.cohorts.record("a", {ELECTRONICS: 10.0})
    await checkpoint.take(wait=True)
    assert calls.calls == ["serving.write", "changelog.write", "cohorts.write"]
    assert [(p, name, sketch.count) for p, name, sketch in writer.written] == [(3, ELECTRONICS, 1)]
    # Nothing changed since: nothing pending, nothing published.
    assert not checkpoint.due()
    await checkpoint.take(wait=True)
    assert calls.count("cohorts.write") == 1
    # A changed sketch alone makes a checkpoint pending.
    state.cohorts.move(ELECTRONICS, "b", None, 30.0)
    await checkpoint.take(wait=True)
    assert calls.count("cohorts.write") == 2 and writer.written[-1][2].count == 2


class CohortTopic:
    """The cohorts topic in memory: records appended by a `FakeTopicProducer`, read by watchers."""

    def __init__(self) -> None:
        self.records: list[SourceRecord] = []
        self.producer = FakeTopicProducer(FakeConsumer(topics={TopicPartition("cohorts", 0): self.records}))

    async def open_consumer(self) -> ChangelogConsumer:
        return FakeConsumer(topics={TopicPartition("cohorts", 0): self.records})

    async def publish(
        self, defs: Definitions, partition: int, name: str, values: list[float], alpha: float = 0.01
    ) -> None:
        sketch = QuantileSketch(alpha)
        for value in values:
            sketch.add(value)
        record = sketch_record(defs, partition, name, sketch)
        await self.producer.send_and_wait(
            "cohorts", record.model_dump_json().encode(), key=cohort_key(name, partition).encode()
        )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_workers_merge_every_partition_s_latest_sketch_into_thresholds() -> None:
    topic = CohortTopic()
    await topic.publish(DEFS, 0, ELECTRONICS, [100.0] * 50)
    await topic.publish(DEFS, 1, ELECTRONICS, [200.0] * 45 + [1000.0] * 5)
    await topic.publish(DEFS, 0, ORDERS, [1.0, 2.0, 3.0])
    other = parse_definitions(DEFINITIONS.replace("purchases_30d, quantile", "views_30d, quantile"))
    await topic.publish(other, 1, ORDERS, [50.0] * 10)  # of views_30d: not merged with purchases_30d
    await topic.publish(DEFS, 2, ELECTRONICS, [9999.0], alpha=0.05)  # another α: left out
    engine: dict[str, float] = {}
    handed: list[dict[str, float]] = []

    async def move(thresholds: dict[str, float]) -> None:
        handed.append(thresholds)
        engine.clear()
        engine.update(thresholds)

    clock = Clock()
    watcher = CohortWatcher(
        "cohorts", topic.open_consumer, lambda: DEFS, 0.01, 5.0, lambda: engine, move, clock=clock
    )
    await watcher.start()
    moved = await watcher.step(0)
    assert moved is not None and sorted(moved) == [ORDERS, ELECTRONICS]
    # 100 values: rank ⌊0.95 · 99⌋ = 94 is the 45th of partition 1's 200s (50 + 45 > 94).
    assert moved[ELECTRONICS] == pytest.approx(200.0, rel=0.01)
    assert moved[ORDERS] == pytest.approx(2.0, rel=0.01)  # rank ⌊0.9 · 2⌋ = 1 of 1, 2, 3
    assert await watcher.step(0) is None  # nothing new
    # Partition 0's newer sketch replaces its older one; handed over once the recheck interval passed.
    await topic.publish(DEFS, 0, ELECTRONICS, [1000.0] * 50)
    assert await watcher.step(0) is None
    clock.now += 5.0
    moved = await watcher.step(0)
    assert moved is not None and moved[ELECTRONICS] == pytest.approx(1000.0, rel=0.01)
    assert len(handed) == 2
    await watcher.close()


async def test_a_preview_takes_each_version_s_thresholds_from_the_same_sketches() -> None:
    """`tessera segments preview` of a changed quantile: the current version's members by its 95th
    percentile, the new version's by its median, both from the sketches on the topic."""
    topic = CohortTopic()
    spends = [float(v) for v in range(1, 101)]
    await topic.publish(DEFS, 0, ELECTRONICS, spends[:60])
    await topic.publish(DEFS, 1, ELECTRONICS, spends[60:])
    median = parse_definitions(DEFINITIONS.replace("quantile: 0.95", "quantile: 0.5").replace('"c1"', '"c2"'))
    board = await read_board("cohorts", topic.open_consumer)
    now_thresholds, new_thresholds = board.thresholds(DEFS, 0.01), board.thresholds(median, 0.01)
    assert now_thresholds[ELECTRONICS] == pytest.approx(95.0, rel=0.01)
    assert new_thresholds[ELECTRONICS] == pytest.approx(50.0, rel=0.01)
    profiles = [spender(electronics=v, visitor_id=f"v{int(v):03d}") for v in spends]

    result = preview(
        profiles, median, BASE, current=DEFS, cohorts=new_thresholds, cohorts_current=now_thresholds
    )
    top = result.segments["top_electronics"]
    above = lambda t: sum(v >= t for v in spends)  # noqa: E731
    assert (top.members_now, top.members_after) == (
        above(now_thresholds[ELECTRONICS]),
        above(new_thresholds[ELECTRONICS]),
    )
    assert 5 <= top.members_now <= 7 and 50 <= top.members_after <= 52
    assert top.entering == top.members_after - top.members_now and top.leaving == 0
    # One mapping for both (the running version's thresholds) is what the preview did before.
    same = preview(profiles, median, BASE, current=DEFS, cohorts=now_thresholds)
    assert same.segments["top_electronics"].entering == 0


def test_a_record_this_release_cannot_read_is_skipped() -> None:
    board = CohortBoard()
    board.add(b"x:0", b"{not json")
    board.add(None, b"{}")
    record = CohortSketchRecord(
        cohort=ORDERS, partition=0, of="purchases_30d", alpha=0.01, offset=0, counts=[2], count=2,
        definition_version="c1", published_at=datetime.now(UTC),
    )  # fmt: skip
    board.add(b"orders_p90:0", record.model_dump_json().encode())
    assert list(board.latest) == ["orders_p90:0"] and board.thresholds(DEFS, 0.01) == {
        ORDERS: pytest.approx(1.0, rel=0.01)
    }


def test_diff_names_changed_cohorts_and_the_segments_reading_them() -> None:
    changed = parse_definitions(
        DEFINITIONS.replace('version: "c1"', 'version: "c2"').replace("0.95}", "0.99}")
    )
    assert diff_definitions(DEFS, changed) == [
        'version: "c1" → "c2"',
        "cohorts:",
        "  ~ spend_p95[electronics]:",
        "      quantile 0.95 of spend_365d[electronics] → quantile 0.99 of spend_365d[electronics]",
        "  ~ spend_p95[clothing]:",
        "      quantile 0.95 of spend_365d[clothing] → quantile 0.99 of spend_365d[clothing]",
        "segments:",
        "  ~ top_electronics:",
        "      reads changed cohorts: spend_p95",
        "  ~ top_clothing:",
        "      reads changed cohorts: spend_p95",
    ]
