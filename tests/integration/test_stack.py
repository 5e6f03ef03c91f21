"""The embedded stack: parts start, answer, stop by PID; configured parts are passed through."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import clickhouse_connect
import psutil
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra import stack as stack_module
from infra.stack import (
    CLICKHOUSE,
    KAFKA,
    REDIS,
    EmbeddedStack,
    StackEndpoints,
    StackError,
    StackInUseError,
    stop_stale,
)
from infra.topics import TopicSpec, default_topic_specs, ensure_topics
from streams.testing import async_wait_until, wait_until


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pid_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "pids").glob("*")) if (data_dir / "pids").exists() else []


async def _roundtrip_kafka(bootstrap: str, topic: str) -> None:
    await ensure_topics(bootstrap, [TopicSpec(topic, partitions=2)], timeout_s=10)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello", key=b"visitor-1", partition=1)
    finally:
        await producer.stop()
    assert (meta.partition, meta.offset) == (1, 0)

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 1)])
        await consumer.seek_to_beginning()
        got: list[tuple[bytes | None, bytes | None]] = []

        async def received() -> bool:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                got.extend((r.key, r.value) for r in records)
            return bool(got)

        await async_wait_until(received, timeout=10, message="record consumed")
    finally:
        await consumer.stop()
    assert got == [(b"visitor-1", b"hello")]


@pytest.mark.timeout(60)
async def test_stack_starts_answers_and_stops_by_pid(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path / "stack")
    with stack as endpoints:
        assert endpoints.started == [KAFKA, REDIS, CLICKHOUSE]
        pids = stack.pids
        assert set(pids) == {KAFKA, REDIS}
        data_dir = stack.data_dir
        for part, pid in pids.items():
            assert (data_dir / "pids" / f"{part}.pid").read_text().strip() == str(pid)
            assert _alive(pid)
            assert (data_dir / "logs" / f"{part}.log").exists()

        await _roundtrip_kafka(endpoints.kafka_bootstrap, "stack_roundtrip")

        client = redis.Redis.from_url(endpoints.redis_url)
        try:
            assert client.ping() is True
            client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        finally:
            client.close()

        # chDB is in-process: nothing runs, the folder exists. It is not opened here: one chDB path per
        # process, and this process uses the session's (see test_chdb_through_clickhouse_connect).
        assert endpoints.clickhouse_dsn == f"chdb://{data_dir / 'chdb'}"
        assert (data_dir / "chdb").is_dir()

    assert stack.endpoints is None and stack.pids == {}
    assert not any(_alive(pid) for pid in pids.values())
    assert _pid_files(data_dir) == []
    assert (data_dir / "redis" / "appendonly.aof").exists()


def test_chdb_through_clickhouse_connect(clickhouse_dsn: str) -> None:
    client = clickhouse_connect.get_client(dsn=clickhouse_dsn)
    try:
        client.command(
            "CREATE TABLE events (event_id String, visitor_id String, revenue Float64) "
            "ENGINE = MergeTree ORDER BY (visitor_id, event_id)"
        )
        client.insert(
            "events",
            [["e1", "v1", 10.5], ["e2", "v1", 0.0], ["e3", "v2", 4.5]],
            column_names=["event_id", "visitor_id", "revenue"],
        )
        rows = client.query(
            "SELECT visitor_id, count(), sum(revenue) FROM events GROUP BY visitor_id ORDER BY visitor_id"
        ).result_rows
    finally:
        client.close()
    assert rows == [("v1", 2, 10.5), ("v2", 1, 4.5)]


def test_configured_parts_are_not_started(tmp_path: Path) -> None:
    stack = EmbeddedStack(
        tmp_path / "stack",
        kafka_broker="kafka.example:9092",
        clickhouse_dsn="http://tessera:secret@clickhouse.example:8123/tessera",
    )
    with stack as endpoints:
        assert endpoints.started == [REDIS]
        assert endpoints.kafka_bootstrap == "kafka.example:9092"
        assert endpoints.clickhouse_dsn == "http://tessera:secret@clickhouse.example:8123/tessera"
        assert set(stack.pids) == {REDIS}
        assert _pid_files(stack.data_dir) == ["redis.json", "redis.pid"]
        assert not (stack.data_dir / "chdb").exists()
        assert endpoints.as_env()["TESSERA_KAFKA_BROKER"] == "kafka.example:9092"

    given = StackEndpoints("k:9092", "redis://r:6379/0", "http://c:8123/db", [])
    with EmbeddedStack(tmp_path / "none", given.kafka_bootstrap, given.redis_url, given.clickhouse_dsn) as ep:
        assert ep == given
    assert not (tmp_path / "none" / "pids").exists()


@pytest.mark.timeout(60)
def test_several_stacks_at_once(tmp_path: Path) -> None:
    stacks = [EmbeddedStack(tmp_path / f"s{i}", clickhouse_dsn="chdb://memory") for i in range(3)]
    errors: list[BaseException] = []

    def start(stack: EmbeddedStack) -> None:
        try:
            stack.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stacks]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        endpoints = [s.endpoints for s in stacks]
        assert all(ep is not None for ep in endpoints)
        addresses = [a for ep in endpoints if ep for a in (ep.kafka_bootstrap, ep.redis_url)]
        assert len(set(addresses)) == len(addresses)
        for ep in endpoints:
            assert ep is not None
            client = redis.Redis.from_url(ep.redis_url)
            try:
                assert client.ping()
            finally:
                client.close()
    finally:
        for s in stacks:
            s.stop()


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from infra.stack import EmbeddedStack
    stack = EmbeddedStack(Path(sys.argv[1]), clickhouse_dsn="chdb://memory")
    stack.start()
    print("PIDS", json.dumps(stack.pids), flush=True)  # structlog also prints to stdout
    if sys.argv[2] == "raise":
        raise RuntimeError("worker crashed")
    sys.stdin.read()  # park until killed
    """
)


def _pids_line(lines: Iterable[str]) -> dict[str, int]:
    for line in lines:
        if line.startswith("PIDS "):
            pids: dict[str, int] = json.loads(line[5:])
            return pids
    raise AssertionError("the child printed no PIDS line")


@pytest.fixture
def child_stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, int], Path]]:
    """A Python process owning a stack in `tmp_path/stack`, parked until the test kills it."""
    data_dir = tmp_path / "stack"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir), "park"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    pids: dict[str, int] = {}
    try:
        pids = _pids_line(iter(proc.stdout.readline, ""))
        yield proc, pids, data_dir
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        stop_stale(data_dir)
        for pid in pids.values():  # never leak a broker, whatever the test did
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(60)
def test_stop_stale_kills_what_a_crashed_owner_left(
    child_stack: tuple[subprocess.Popen[str], dict[str, int], Path],
) -> None:
    owner, pids, data_dir = child_stack
    assert set(pids) == {KAFKA, REDIS} and all(_alive(pid) for pid in pids.values())

    # While the owner runs, its data_dir is in use: not stale, not to be started twice.
    assert stop_stale(data_dir) == []
    with pytest.raises(StackInUseError):
        EmbeddedStack(data_dir).start()
    assert all(_alive(pid) for pid in pids.values())

    owner.kill()  # SIGKILL: no atexit, the brokers are orphaned
    owner.wait(10)
    assert all(_alive(pid) for pid in pids.values())

    assert sorted(stop_stale(data_dir)) == [KAFKA, REDIS]
    assert not any(_alive(pid) for pid in pids.values())
    assert _pid_files(data_dir) == []

    # The next start in that data_dir works (start() runs stop_stale itself).
    with EmbeddedStack(data_dir, clickhouse_dsn="chdb://memory") as endpoints:
        assert endpoints.started == [KAFKA, REDIS]


@pytest.mark.timeout(60)
def test_owner_exit_with_stdout_gone_still_stops_everything(
    child_stack: tuple[subprocess.Popen[str], dict[str, int], Path],
) -> None:
    """The owner's stdout is a closed pipe at exit, so its log writes fail: every part must stop anyway."""
    owner, pids, data_dir = child_stack
    assert owner.stdout is not None and owner.stdin is not None
    owner.stdout.close()
    owner.stdin.close()  # EOF: the owner leaves its park and exits normally, through atexit
    assert owner.wait(20) is not None
    wait_until(lambda: not any(_alive(pid) for pid in pids.values()), timeout=10, message="brokers gone")
    assert _pid_files(data_dir) == []


def test_stop_stale_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    (pids_dir / "kafka.pid").write_text(f"{os.getpid()}\n")  # this pytest process: not a broker
    assert stop_stale(tmp_path) == []
    assert _pid_files(tmp_path) == []


@pytest.mark.timeout(60)
def test_atexit_stops_the_stack_when_the_owner_raises(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data_dir), "raise"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1 and "worker crashed" in proc.stderr
    pids = _pids_line(proc.stdout.splitlines())
    try:
        assert set(pids) == {KAFKA, REDIS}
        wait_until(lambda: not any(_alive(pid) for pid in pids.values()), timeout=5, message="brokers gone")
        assert _pid_files(data_dir) == []
    finally:
        stop_stale(data_dir)


def test_default_topic_specs() -> None:
    specs = {s.name: s for s in default_topic_specs("ev", "ev.dlq", "chg", "msg", "cl", 6, 1)}
    assert set(specs) == {"ev", "ev.dlq", "chg", "msg", "cl"}
    assert all(s.partitions == 6 and s.replication_factor == 1 for s in specs.values())
    assert specs["cl"].config["cleanup.policy"] == "compact"
    assert int(specs["ev.dlq"].config["retention.ms"]) > int(specs["ev"].config["retention.ms"])


@pytest.mark.timeout(60)
async def test_ensure_topics_is_idempotent(embedded_stack: StackEndpoints, unique_name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    specs = default_topic_specs(
        f"{unique_name}-events",
        f"{unique_name}-events.dlq",
        f"{unique_name}-changes",
        f"{unique_name}-messages",
        f"{unique_name}-changelog",
        partitions=3,
        replication_factor=1,
    )
    await ensure_topics(embedded_stack.kafka_bootstrap, specs)
    await ensure_topics(embedded_stack.kafka_bootstrap, specs)  # existing topics are fine
    admin = AIOKafkaAdminClient(bootstrap_servers=embedded_stack.kafka_bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([s.name for s in specs])}
    finally:
        await admin.close()
    assert {name: len(t["partitions"]) for name, t in described.items()} == {s.name: 3 for s in specs}


@pytest.mark.timeout(60)
async def test_broker_offsets_listoffsets_vs_fetch_highwater(
    embedded_stack: StackEndpoints, unique_name: str
) -> None:
    """What "read a partition to its end" can rely on (see the module docstring of infra/topics.py).

    ListOffsets(latest) (`end_offsets`, `seek_to_end`) on Tansu answers the last batch's base offset + 1,
    so it undercounts whenever the last batch holds more than one record; the Fetch high watermark
    (`highwater`) is exact, and is set (to 0) by the first fetch of an empty partition.
    """
    bootstrap = embedded_stack.kafka_bootstrap
    topic = unique_name
    await ensure_topics(bootstrap, [TopicSpec(topic, partitions=2)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(5):
            assert batch.append(key=None, value=b"%d" % i, timestamp=None) is not None
        await (await producer.send_batch(batch, topic, partition=0))  # one batch of 5 records
    finally:
        await producer.stop()

    full, empty = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        end = await consumer.end_offsets([full, empty])
        assert end[empty] == 0
        assert 1 <= end[full] <= 5  # 1 on Tansu v0.6.0-510f3e2; 5 on Apache Kafka
        consumer.assign([full, empty])
        assert consumer.highwater(empty) is None  # unknown until a fetch response arrives
        await consumer.seek_to_beginning()
        seen = 0

        async def both_known() -> bool:
            nonlocal seen
            for records in (await consumer.getmany(timeout_ms=50)).values():
                seen += len(records)
            return (
                seen == 5 and consumer.highwater(full) is not None and consumer.highwater(empty) is not None
            )

        await async_wait_until(both_known, timeout=10, message="fetched to the end")
        assert consumer.highwater(full) == 5
        assert consumer.highwater(empty) == 0
        assert await consumer.position(full) == 5
    finally:
        await consumer.stop()


ROOT = Path(__file__).resolve().parents[2]


def _grafana_macros(sql: str) -> str:
    """The grafana-clickhouse-datasource macros the dashboard uses, for the last hour."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"(\1 >= now() - INTERVAL 1 HOUR AND \1 <= now())", sql)
    return sql.replace("$__fromTime", "(now() - INTERVAL 1 HOUR)").replace("$__toTime", "now()")


@pytest.mark.timeout(60)
def test_dashboard_queries_run_on_the_ddl(clickhouse_dsn: str) -> None:
    """Every Grafana query runs against infra/clickhouse/ddl.sql and gives the expected numbers."""
    database = parse_qs(urlsplit(clickhouse_dsn).query)["database"][0]
    ddl = "\n".join(
        line
        for line in (ROOT / "infra/clickhouse/ddl.sql").read_text().splitlines()
        if not line.startswith("--")
    )
    client = clickhouse_connect.get_client(dsn=clickhouse_dsn)
    try:
        for statement in filter(None, (s.strip() for s in ddl.split(";\n"))):
            if not statement.upper().startswith("CREATE DATABASE"):
                client.command(statement.rstrip(";").replace("tessera.", f"`{database}`."))
        now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
        client.insert(
            "events",
            [
                ["e1", "v1", now, "purchase", 30.0, ["buyers"]],
                ["e2", "v2", now, "page_view", 0.0, ["buyers", "browsers"]],
            ],
            column_names=["event_id", "visitor_id", "event_time", "type", "revenue", "segments"],
        )
        client.insert(
            "segment_changes",
            [
                ["c1", "v1", "buyers", "entered", now],
                ["c2", "v2", "buyers", "entered", now],
                ["c3", "v2", "buyers", "exited", now + timedelta(seconds=1)],
            ],
            column_names=["change_id", "visitor_id", "segment", "transition", "event_time"],
        )
        results: dict[str, Sequence[Sequence[Any]]] = {}
        dashboard = json.loads((ROOT / "infra/grafana/dashboards/tessera-segments.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):  # a text panel has none
                sql = _grafana_macros(target["rawSql"]).replace("tessera.", f"`{database}`.")
                results[panel["title"]] = client.query(sql).result_rows
    finally:
        client.close()
    assert [row[1:] for row in results["Events per minute"]] == [(2,)]
    assert results["Segment sizes now (entries − exits)"] == [("buyers", 1)]
    assert [row[1:] for row in results["Segment sizes over time"]] == [("buyers", 1)]
    # `*` is every visitor (the baseline): 30.0 of revenue over 2 visitors, as in `buyers`.
    assert sorted(tuple(row[1:]) for row in results["Revenue per user per segment"]) == [
        ("*", 15.0),
        ("browsers", 0.0),
        ("buyers", 15.0),
    ]


@pytest.mark.timeout(60)
def test_failed_start_raises_with_the_log_tail_and_stops_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'fake redis: never listens'\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setattr(stack_module, "redis_executable", lambda: str(fake))
    stack = EmbeddedStack(tmp_path / "stack", start_timeout_s=0.5)
    with pytest.raises(StackError, match="fake redis: never listens"):
        stack.start()
    started = stack.started_pids
    assert set(started) == {KAFKA, REDIS}
    assert stack.pids == {}
    assert not any(_alive(pid) for pid in started.values())
    assert _pid_files(stack.data_dir) == []
    assert stack.endpoints is None
