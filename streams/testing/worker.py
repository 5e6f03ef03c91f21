"""A `tessera worker` subprocess as a fixture: its configuration, start, web API and stop.

The end-to-end tests, the bench and `tessera demo` all start workers through this module:

    config = WorkerConfig(kafka, redis_url, tmp_path / "w")   # fresh topics, group, Redis prefix
    worker = WorkerProcess(config).start()                    # spawned, /healthz ready
    try:
        ends = asyncio.run(produce_records(kafka, config.events_topic, records))
        worker.wait_committed(ends)                           # /v1/status committed >= ends
    finally:
        worker.stop()                                         # SIGTERM by PID, SIGKILL past a deadline

Every wait raises at once, with the tail of the worker's log, when the worker has exited.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import psutil

from infra.stack import free_port
from streams.logging import get_logger
from streams.testing.wait import Errors, wait_until

if TYPE_CHECKING:
    from streams.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")

NOT_ANSWERING: Errors = (OSError, ValueError, KeyError, http.client.HTTPException)
"""Errors of a worker that does not answer yet: a refused or timed-out connection (URLError is an
OSError), an answer cut short or not JSON, a field its answer does not hold yet."""


def wait_on_worker(
    predicate: Callable[[], T | None], timeout: float, interval: float = 0.1, message: str | None = None
) -> T:
    """`wait_until` for a predicate that asks a worker (its web API, its consumer group): a worker
    that does not answer yet (`NOT_ANSWERING`) counts as not yet."""
    return wait_until(predicate, timeout, interval, message, ignore=NOT_ANSWERING)


class ProcessExited(AssertionError):
    """A child process exited while it was expected to run (the message holds the tail of its log)."""


class ChildProcess:
    """A subprocess whose output goes to a log file, stopped by its own PID: SIGTERM, then SIGKILL
    past a deadline."""

    exited_error: ClassVar[type[Exception]] = ProcessExited
    """What `check_alive` raises; a caller with its own error type sets its own."""
    log_tail_lines: ClassVar[int] = 60

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        """time.time() just before the spawn (the clock of the child's own timestamps)."""

    def spawn(self) -> Self:
        """Start the process, its output appended to `log_path`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.spawned_at = time.time()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
            )
        return self

    def start(self) -> Self:
        """Spawn the process (a subclass waits for what "started" means for it)."""
        return self.spawn()

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not spawned"
        return self.proc.pid

    def check_alive(self) -> None:
        """Raise `exited_error` (with the tail of the log) if the process has exited."""
        proc = self.proc
        if proc is not None and proc.poll() is not None:
            raise self.exited_error(
                f"{self.name} (pid {proc.pid}) exited with {proc.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-(lines or self.log_tail_lines) :])

    def stop(self, timeout: float = 30.0, kill_timeout: float = 10.0) -> int | None:
        """SIGTERM this process's PID, wait up to `timeout` s, then SIGKILL; return its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.on_sigterm_ignored(timeout)
                proc.kill()
                proc.wait(kill_timeout)
        return proc.returncode

    def on_sigterm_ignored(self, timeout: float) -> None:
        """Called before the SIGKILL of a process that outlived its SIGTERM by `timeout` s."""
        log.warning("child_ignored_sigterm", name=self.name, pid=self.pid, timeout_s=timeout)

    def kill9(self, timeout: float = 10.0) -> None:
        """SIGKILL this process's PID (a crash, for recovery tests) and reap it."""
        assert self.proc is not None, f"{self.name} was not spawned"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=timeout)


@dataclass
class WorkerConfig:
    """One worker deployment: endpoints, names and folder, turned into the `TESSERA_*` environment.

    Names left empty are derived from `run_id` (fresh per config) and `prefix`: topics
    `<prefix>events-<run>`, `….dlq`, `<prefix>segment-changes-<run>`, `<prefix>messages-<run>`,
    `<prefix>profiles-changelog-<run>`, `<prefix>definitions-<run>`, `<prefix>cohorts-<run>`, group
    `<prefix>tessera-<run>`. Workers that share a config (or a copy by `dataclasses.replace`) share a
    consumer group, a definitions and a cohorts topic; give each its own `data_dir`.
    """

    kafka: str
    redis_url: str
    data_dir: Path
    events_topic: str = ""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    partitions: int = 4
    prefix: str = ""
    dlq_topic: str = ""
    changes_topic: str = ""
    messages_topic: str = ""
    changelog_topic: str = ""
    definitions_topic: str = ""
    cohorts_topic: str = ""
    group_id: str = ""
    redis_prefix: str = ""
    clickhouse_dsn: str | None = None
    """None: chDB in `data_dir/chdb`, which belongs to that worker's process alone."""
    segments_file: Path | None = None
    """None: the worker's default (or `TESSERA_SEGMENTS_FILE` of this environment)."""
    web_host: str | None = None
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    """More `TESSERA_*` variables (batch sizes, the profile store...); they win over the above."""

    def __post_init__(self) -> None:
        prefix, run = self.prefix, self.run_id
        self.events_topic = self.events_topic or f"{prefix}events-{run}"
        self.dlq_topic = self.dlq_topic or f"{prefix}events-{run}.dlq"
        self.changes_topic = self.changes_topic or f"{prefix}segment-changes-{run}"
        self.messages_topic = self.messages_topic or f"{prefix}messages-{run}"
        self.changelog_topic = self.changelog_topic or f"{prefix}profiles-changelog-{run}"
        self.definitions_topic = self.definitions_topic or f"{prefix}definitions-{run}"
        self.cohorts_topic = self.cohorts_topic or f"{prefix}cohorts-{run}"
        self.group_id = self.group_id or f"{prefix}tessera-{run}"
        # Letters and digits only: `t<run>`, or the prefix without its dash.
        self.redis_prefix = self.redis_prefix or f"{prefix.rstrip('-') or 't'}{run}"

    @classmethod
    def from_settings(cls, settings: Settings, kafka: str, redis_url: str, clickhouse_dsn: str) -> Self:
        """A worker named and set up like `settings` (the `tessera` command's own), on these endpoints."""
        return cls(
            kafka,
            redis_url,
            settings.data_dir,
            events_topic=settings.events_topic,
            partitions=settings.partitions,
            dlq_topic=settings.dlq_topic,
            changes_topic=settings.changes_topic,
            messages_topic=settings.messages_topic,
            changelog_topic=settings.changelog_topic,
            definitions_topic=settings.definitions_topic,
            cohorts_topic=settings.cohorts_topic,
            group_id=settings.group_id,
            redis_prefix=settings.redis_prefix,
            clickhouse_dsn=clickhouse_dsn,
            segments_file=settings.segments_file,
            web_host=settings.web_host,
            log_level=settings.log_level,
        )

    def tessera_env(self, web_port: int) -> dict[str, str]:
        """The `TESSERA_*` variables of a worker of this deployment listening on `web_port`."""
        dsn = self.clickhouse_dsn
        values = {
            "TESSERA_KAFKA_BROKER": self.kafka,
            "TESSERA_REDIS_URL": self.redis_url,
            "TESSERA_CLICKHOUSE_DSN": f"chdb://{(self.data_dir / 'chdb').resolve()}" if dsn is None else dsn,
            "TESSERA_DATA_DIR": str(self.data_dir),
            "TESSERA_EVENTS_TOPIC": self.events_topic,
            "TESSERA_DLQ_TOPIC": self.dlq_topic,
            "TESSERA_CHANGES_TOPIC": self.changes_topic,
            "TESSERA_MESSAGES_TOPIC": self.messages_topic,
            "TESSERA_CHANGELOG_TOPIC": self.changelog_topic,
            "TESSERA_DEFINITIONS_TOPIC": self.definitions_topic,
            "TESSERA_COHORTS_TOPIC": self.cohorts_topic,
            "TESSERA_GROUP_ID": self.group_id,
            "TESSERA_REDIS_PREFIX": self.redis_prefix,
            "TESSERA_PARTITIONS": str(self.partitions),
            "TESSERA_WEB_PORT": str(web_port),
            "TESSERA_LOG_LEVEL": self.log_level,
        }
        if self.web_host is not None:
            values["TESSERA_WEB_HOST"] = self.web_host
        if self.segments_file is not None:
            values["TESSERA_SEGMENTS_FILE"] = str(self.segments_file)
        values.update(self.extra_env)
        return values

    def env(self, web_port: int) -> dict[str, str]:
        """This process's environment with `tessera_env(web_port)` on top."""
        return {**os.environ, **self.tessera_env(web_port)}


class WorkerProcess(ChildProcess):
    """One `python -m streams.cli worker` subprocess of `config` and its web API.

    The class attributes are the waits' defaults; a caller with other needs (the bench) sets its own.
    """

    ready_timeout_s: ClassVar[float] = 90.0
    ready_poll_s: ClassVar[float] = 0.1
    healthz_timeout_s: ClassVar[float] = 30.0
    status_timeout_s: ClassVar[float] = 30.0

    def __init__(
        self,
        config: WorkerConfig,
        name: str = "worker",
        *,
        port: int | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        """`port` None: a free one; `log_path` None: `<data_dir>/<name>-<port>.log`."""
        self.config = config
        self.port = free_port() if port is None else port
        self.web = f"http://{config.web_host or '127.0.0.1'}:{self.port}"
        self.ready_at = 0.0
        """time.time() when /healthz first answered ready."""
        config.data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            name,
            [sys.executable, "-m", "streams.cli", "worker"],
            self.environment(),
            log_path or config.data_dir / f"{name}-{self.port}.log",
            cwd,
        )

    def environment(self) -> dict[str, str]:
        """The worker's whole environment (`config.env` unless a subclass adds to it)."""
        return self.config.env(self.port)

    def start(self, ready_timeout: float | None = None) -> Self:
        """Spawn the worker and wait until /healthz says ready."""
        self.spawn()
        return self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float | None = None) -> Self:
        """Wait until /healthz of the spawned worker says ready; `ready_at` is then set."""
        self.wait(
            lambda: self.get("/healthz", self.healthz_timeout_s)["ready"],
            self.ready_timeout_s if timeout is None else timeout,
            self.ready_poll_s,
            f"{self.name} /healthz ready",
        )
        self.ready_at = time.time()
        return self

    def wait(
        self,
        predicate: Callable[[], T | None],
        timeout: float,
        interval: float = 0.1,
        message: str | None = None,
    ) -> T:
        """`wait_on_worker`, raising at once (with the tail of the log) when this worker has exited."""

        def alive_and_holds() -> T | None:
            self.check_alive()
            return predicate()

        return wait_on_worker(alive_and_holds, timeout, interval, message)

    def get(self, path: str, timeout: float = 30.0, headers: Mapping[str, str] | None = None) -> Any:
        """GET `path` of the worker's web API (with `headers`); its JSON answer."""
        request = urllib.request.Request(self.web + path, headers=dict(headers or {}))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def post(
        self, path: str, body: bytes, timeout: float = 30.0, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST a JSON `body` to `path` (with `headers` besides the content type); (HTTP status, JSON
        answer), error statuses included."""
        request = urllib.request.Request(
            self.web + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def status(self) -> dict[str, Any]:
        """GET /v1/status (a worker that exited raises `exited_error` instead)."""
        self.check_alive()
        status: dict[str, Any] = self.get("/v1/status", self.status_timeout_s)
        return status

    def wait_committed(
        self,
        ends: Mapping[int, int],
        timeout: float = 240.0,
        interval: float = 0.2,
        on_status: Callable[[dict[str, Any]], object] | None = None,
    ) -> dict[str, Any]:
        """Poll /v1/status until every partition's committed offset reaches its end in `ends`
        (partition → last offset + 1); return that status. `on_status` sees every status read
        before then (progress lines, stall checks: an exception it raises ends the wait)."""

        def reached() -> dict[str, Any] | None:
            status = self.status()
            committed = status["committed"]
            if all(committed.get(str(p), 0) >= end for p, end in ends.items() if end > 0):
                return status
            if on_status is not None:
                on_status(status)
            return None

        found: dict[str, Any] = self.wait(reached, timeout, interval, f"{self.name} to commit {dict(ends)}")
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the worker process has used so far."""
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def main_thread_cpu_seconds(self) -> float:
        """CPU of the worker's main thread (the event loop running the batch loop); on Linux its
        thread id is the process id. NaN where per-thread times are not available."""
        for thread in psutil.Process(self.pid).threads():
            if thread.id == self.pid:
                return float(thread.user_time + thread.system_time)
        return float("nan")


__all__ = [
    "NOT_ANSWERING",
    "ChildProcess",
    "ProcessExited",
    "WorkerConfig",
    "WorkerProcess",
    "wait_on_worker",
]
