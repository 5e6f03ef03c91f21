"""Fixtures shared by every test folder.

- `embedded_stack` (session): one embedded Kafka + Redis + chDB for the whole run, stopped by PID at
  the end. Point it at real services with `TESSERA_TEST_KAFKA_BROKER`, `TESSERA_TEST_REDIS_URL`,
  `TESSERA_TEST_CLICKHOUSE_DSN` (a part given there is not started).
- `unique_name`: a fresh name per test for topics, consumer groups, Redis prefixes, databases.
- `clickhouse_dsn`: a fresh ClickHouse database per test on the session's ClickHouse, as a DSN.
- `wait_until` / `async_wait_until`: the helpers of `streams.testing` as fixtures.

chDB is one data folder per process: a test process can open only the session's chDB path, and a
worker started as a subprocess cannot open a chDB folder this process has open (give such a worker
its own `EmbeddedStack` data_dir, or its own chDB DSN).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `from tests.e2e.harness import ...` works without a tests package install
    sys.path.insert(0, str(ROOT))

from infra.stack import EmbeddedStack, StackEndpoints  # noqa: E402
from streams import testing  # noqa: E402


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    """The session's Kafka bootstrap, Redis URL and ClickHouse DSN (embedded unless configured)."""
    stack = EmbeddedStack(
        tmp_path_factory.mktemp("stack"),
        kafka_broker=os.environ.get("TESSERA_TEST_KAFKA_BROKER") or None,
        redis_url=os.environ.get("TESSERA_TEST_REDIS_URL") or None,
        clickhouse_dsn=os.environ.get("TESSERA_TEST_CLICKHOUSE_DSN") or None,
    )
    with stack as endpoints:
        yield endpoints


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """`<test name>_<12 hex>`: lower-case letters, digits and `_` only, at most 53 characters, so it
    is valid as a Kafka topic, consumer group, Redis key prefix and ClickHouse identifier."""
    base = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower()).strip("_")[:40] or "t"
    return testing.unique_name(base)


@pytest.fixture
def wait_until() -> Callable[..., object]:
    """`streams.testing.wait_until(predicate, timeout=10, interval=0.05, message=None, ignore=(), *,
    fatal=())`."""
    return testing.wait_until


@pytest.fixture
def async_wait_until() -> Callable[..., object]:
    """`await streams.testing.async_wait_until(predicate, timeout=10, interval=0.05, ...)`."""
    return testing.async_wait_until


def dsn_with_database(dsn: str, database: str) -> str:
    """`dsn` pointing at `database`: `chdb:///path?database=db`, or `http://u:p@host:8123/db`."""
    parts = urlsplit(dsn)
    if parts.scheme == "chdb":
        query = "&".join(q for q in (parts.query, f"database={database}") if q)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


@pytest.fixture
def clickhouse_dsn(embedded_stack: StackEndpoints, unique_name: str) -> Iterator[str]:
    """A DSN of a database created for this test (dropped afterwards) on the session's ClickHouse."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=embedded_stack.clickhouse_dsn)
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS `{unique_name}`")
        yield dsn_with_database(embedded_stack.clickhouse_dsn, unique_name)
        client.command(f"DROP DATABASE IF EXISTS `{unique_name}`")
    finally:
        client.close()
