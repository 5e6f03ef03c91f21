"""The ClickHouse sink in a child process of the worker, so that it runs on another core.

Measured (`make bench`, pipeline step, 2 cores): with the sink in the worker's threads, building
rows, clickhouse-connect's serialisation and embedded chDB's insert cost ≈ 35 % of the worker's
throughput (8.5–9.1k events/s against 11.5–12.6k with no sink at all), because they share the
worker's GIL and core with the batch loop. Here the worker ships, per event, only the record value
it decoded, the enrichment it computed (device, geo and traffic are shared, cached objects; pickle
sends each once per batch) and the segment set, ≈ 2.5 µs per event; the child decodes the value
again with the same adapter, builds the same `EnrichedEvent` and the row, and inserts. Segment
changes and messages are few and go as rows built by the worker.

The protocol is one request, one reply, over a socket pair (`multiprocessing.connection` framing,
pickled tuples): `("write", token, from_raw, event_rows, change_rows, message_rows)`,
`("query", sql, parameters)`, `("segment_report",)`, `("totals",)`, `("close",)`; the reply is
`("ok", value)` or `("error", kind, message)`. A write is acknowledged after ClickHouse has the
rows, so the worker's commit protocol is unchanged: its step 1 ("sinks") waits for this reply.

Failure: a broken connection or a dead child raises `AnalyticsProcessError` in the caller (the
engine then restarts from its committed offsets) and the next call starts a new child. The child
exits when its socket closes (the worker stopped or died); it ignores SIGINT and SIGTERM so that a
Ctrl-C to the process group does not stop it before the worker's last checkpoint. chDB lets one
process hold a data folder: a new child waits for a previous one still finishing an insert.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from schemas.enriched import Device, EnrichedEvent, Geo, Traffic
from schemas.events import EVENT_ADAPTER
from sinks.clickhouse import (
    AnalyticsBatch,
    ClickHouseSink,
    SegmentReportRow,
    TableRows,
    change_row,
    event_row,
    message_row,
)
from streams.logging import configure_logging, get_logger

log = get_logger(__name__)

READY_TIMEOUT_S = 120.0
"""How long a new child may take to import chDB, open the folder (waiting for a predecessor) and
apply the DDL before the call that started it fails."""

OPEN_RETRY_S = 60.0
"""How long the child retries opening a chDB folder another process still holds."""

_RawEvent = tuple[bytes, Device, Geo, Traffic, datetime, int, int, tuple[str, ...]]
"""(record value, device, geo, traffic, received_at, partition, offset, segments)."""


class AnalyticsProcessError(RuntimeError):
    """The child failed or went away; the call did not complete."""


def raw_events(batch: AnalyticsBatch) -> tuple[list[_RawEvent], list[tuple[Any, ...]]]:
    """The batch's events as (what the child decodes again, rows built here for events whose
    record value the batch does not carry)."""
    raw = batch.raw
    if len(raw) == len(batch.events):
        return [
            (value, e.device, e.geo, e.traffic, e.received_at, e.partition, e.offset, segments)
            for (e, segments), value in zip(batch.events, raw, strict=True)
        ], []
    return [], [event_row(e, segments) for e, segments in batch.events]


def rows_from_raw(events: list[_RawEvent]) -> list[tuple[Any, ...]]:
    """The `events` rows of shipped events: the same decoding and the same row as in the worker."""
    rows = []
    for value, device, geo, traffic, received_at, partition, offset, segments in events:
        enriched = EnrichedEvent(
            event=EVENT_ADAPTER.validate_json(value),
            device=device,
            geo=geo,
            traffic=traffic,
            received_at=received_at,
            partition=partition,
            offset=offset,
        )
        rows.append(event_row(enriched, segments))
    return rows


class ClickHouseProcess:
    """`ClickHouseSink`'s interface (write, segment_report, totals, query, close), served by a
    child process that owns the sink. Thread-safe: one request at a time."""

    def __init__(
        self,
        dsn: str,
        database: str = "tessera",
        *,
        log_level: str = "INFO",
        log_json: bool = False,
        gc_gen0_threshold: int = 1_000_000,
    ) -> None:
        self.dsn = dsn
        self.database = database
        self._argv = [
            sys.executable,
            "-m",
            "streams.analytics_process",
            "--dsn",
            dsn,
            "--database",
            database,
            "--log-level",
            log_level,
            "--gc-gen0-threshold",
            str(gc_gen0_threshold),
            *(["--log-json"] if log_json else []),
        ]
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._closed = False
        with self._lock:
            self._start()

    # -- the sink's interface -----------------------------------------------------------------

    def write(self, batch: AnalyticsBatch) -> None:
        from_raw, built = raw_events(batch)
        self._call(
            (
                "write",
                batch.token,
                from_raw,
                built,
                [change_row(c) for c in batch.changes],
                [message_row(m) for m in batch.messages],
            )
        )

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = self._call(("query", sql, parameters))
        return result

    def segment_report(self) -> list[SegmentReportRow]:
        result: list[SegmentReportRow] = self._call(("segment_report",))
        return result

    def totals(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call(("totals",))
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, child = self._conn, self._child
            if conn is not None and child is not None and child.poll() is None:
                try:
                    conn.send_bytes(pickle.dumps(("close",), protocol=5))
                    if conn.poll(30):
                        conn.recv_bytes()
                except (OSError, EOFError):
                    pass
            self._stop_child(wait_s=30)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    # -- plumbing -----------------------------------------------------------------------------

    def _call(self, request: tuple[Any, ...]) -> Any:
        with self._lock:
            if self._closed:
                raise AnalyticsProcessError("the ClickHouse process is closed")
            if self._conn is None or self._child is None or self._child.poll() is not None:
                self._stop_child(wait_s=5)
                self._start()
            conn = self._conn
            assert conn is not None
            try:
                conn.send_bytes(pickle.dumps(request, protocol=5))
                reply = pickle.loads(conn.recv_bytes())
            except (OSError, EOFError) as exc:
                code = self._child.poll() if self._child is not None else None
                self._stop_child(wait_s=5)
                raise AnalyticsProcessError(f"ClickHouse process lost ({exc!r}, exit code {code})") from exc
        if reply[0] == "ok":
            return reply[1]
        raise AnalyticsProcessError(f"{reply[1]}: {reply[2]}")

    def _start(self) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            self._child = subprocess.Popen(
                [*self._argv, "--fd", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child_end.close()
        conn = Connection(parent_end.detach())
        self._conn = conn
        begun = time.monotonic()
        try:
            if not conn.poll(READY_TIMEOUT_S):
                raise AnalyticsProcessError(f"ClickHouse process not ready after {READY_TIMEOUT_S:g} s")
            reply = pickle.loads(conn.recv_bytes())
        except (OSError, EOFError) as exc:
            code = self._child.poll()
            self._stop_child(wait_s=5)
            raise AnalyticsProcessError(
                f"ClickHouse process exited while starting (exit code {code})"
            ) from exc
        except AnalyticsProcessError:
            self._stop_child(wait_s=5)
            raise
        if reply[0] != "ok":
            self._stop_child(wait_s=5)
            raise AnalyticsProcessError(f"ClickHouse process failed to start: {reply[1]}: {reply[2]}")
        log.info(
            "clickhouse_process.started",
            pid=self._child.pid,
            seconds=round(time.monotonic() - begun, 3),
            database=self.database,
        )

    def _stop_child(self, wait_s: float) -> None:
        """Close the socket (the child exits on it) and reap the child; kill it if it lingers."""
        conn, self._conn = self._conn, None
        child, self._child = self._child, None
        if conn is not None:
            conn.close()
        if child is not None:
            try:
                child.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                log.warning("clickhouse_process.killed", pid=child.pid, waited_s=wait_s)
                child.kill()
                child.wait()


# -- the child ------------------------------------------------------------------------------------


def _open_sink(dsn: str, database: str) -> ClickHouseSink:
    """Open the sink and apply the DDL; wait while another process still holds a chDB folder."""
    deadline = time.monotonic() + OPEN_RETRY_S
    while True:
        try:
            sink = ClickHouseSink(dsn, database)
            break
        except Exception as exc:
            if not dsn.startswith("chdb:") or time.monotonic() > deadline:
                raise
            log.info("clickhouse_process.folder_busy", error=str(exc).splitlines()[0][:200])
            time.sleep(0.2)  # a predecessor finishing its insert; retried until OPEN_RETRY_S
    sink.apply_ddl()
    return sink


def _serve(conn: Connection, sink: ClickHouseSink) -> None:
    while True:
        try:
            request = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the worker closed the socket or died
        op = request[0]
        try:
            if op == "write":
                _, token, from_raw, built, change_rows, message_rows = request
                started = time.perf_counter()
                rows = TableRows(
                    events=built + rows_from_raw(from_raw), changes=change_rows, messages=message_rows
                )
                sink.insert_rows(token, rows, build_s=time.perf_counter() - started)
                value: Any = None
            elif op == "query":
                value = sink.query(request[1], request[2])
            elif op == "segment_report":
                value = sink.segment_report()
            elif op == "totals":
                value = sink.totals()
            elif op == "close":
                conn.send_bytes(pickle.dumps(("ok", None), protocol=5))
                return
            else:
                raise ValueError(f"unknown request {op!r}")
            reply: tuple[Any, ...] = ("ok", value)
        except Exception as exc:
            log.error("clickhouse_process.request_failed", op=op, error=repr(exc))
            reply = ("error", type(exc).__name__, str(exc))
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=5))
        except (EOFError, OSError):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tessera's ClickHouse sink as a child process")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--database", default="tessera")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-json", action="store_true")
    parser.add_argument("--gc-gen0-threshold", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    # Stop only when the worker closes the socket: a Ctrl-C or SIGTERM to the process group must
    # not end the sink before the worker's last checkpoint has written through it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(args.log_level, args.log_json)
    conn = Connection(args.fd)
    try:
        sink = _open_sink(args.dsn, args.database)
    except Exception as exc:
        log.error("clickhouse_process.open_failed", error=repr(exc))
        try:
            conn.send_bytes(pickle.dumps(("error", type(exc).__name__, str(exc)), protocol=5))
        except OSError:
            pass
        return 1
    # Like the worker (`streams.app.run_worker`): decoding and rows allocate many short-lived
    # objects; collect the young generation rarely and never scan the start-up objects.
    gc.set_threshold(args.gc_gen0_threshold, 20, 100)
    gc.freeze()
    conn.send_bytes(pickle.dumps(("ok", os.getpid()), protocol=5))
    try:
        _serve(conn, sink)
    finally:
        sink.close()
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
