"""Memory per profile: the engine's in-memory store versus RocksDB (`rocksdict`).

Each store is measured in its own fresh process (`python -m bench.memory --store dict|rocksdb`),
so freed memory of one measurement cannot hide the cost of the next:

1. templates (`--templates-out FILE`, its own process): `--template-visitors` simulated visitors
   of `--workload` (`bench.common.WORKLOADS`) with their full history are folded through
   `process_batch` (the real core, shipped definitions) into real profiles, written to a JSON file;
2. the measuring process loads that file (no simulation garbage left in its heap), RSS is read
   (psutil, after `gc.collect()` and glibc's `malloc_trim`); `--profiles` profiles are built by cloning the
   templates round-robin under new visitor ids (same-length ids swapped in the serialised bytes,
   so sizes are exactly the templates');
3. `dict`: stored like `streams.profile_store.ProfileStore` (partition → {visitor_id: bytes});
   `rocksdb`: `Rdict(raw_mode=True)` put per profile (write µs), flushed, then every profile read
   back in shuffled order (read µs); RSS after writes and after reads;
4. RSS delta / profiles and the mean serialised size go to stdout as one JSON object.

`bench.memory.measure_memory` runs both subprocesses and returns their results.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.common import PARTITIONS, WORKLOADS, BenchError, note, python_env
from streams.core.profile import Profile


def template_profiles(visitors: int, seed: int, kind: str = "default") -> list[tuple[str, bytes]]:
    """(visitor_id, serialised profile) of `visitors` simulated visitors of workload `kind`
    (`bench.common.WORKLOADS`), full history folded."""
    from datetime import UTC, datetime

    from bench.common import encode_events, simulation_params
    from bench.hotpath import core_parts, fold, raw_records
    from streams.simulate import simulate

    sim = simulate(visitors, seed, datetime.now(UTC), params=simulation_params(kind))
    defs, enricher = core_parts()
    store, _, _ = fold(raw_records(encode_events(sim.events)), 5000, defs, enricher)
    return [(visitor, raw) for partition in store.values() for visitor, raw in partition.items()]


def _rss() -> int:
    gc.collect()
    _malloc_trim()
    return int(psutil.Process().memory_info().rss)


def _malloc_trim() -> None:
    """Give free heap pages back to the OS (glibc), so RSS deltas count live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _new_ids(count: int, seed: int) -> Iterator[str]:
    """`count` UUID-shaped visitor ids, the same for the same seed."""
    rng = random.Random(seed)
    for _ in range(count):
        yield str(uuid.UUID(int=rng.getrandbits(128), version=4))


def clone_profiles(
    templates: Sequence[tuple[str, bytes]], count: int, seed: int
) -> Iterator[tuple[str, bytes]]:
    """Yield (visitor_id, bytes) for `count` profiles cloned round-robin from `templates`."""
    for i, new_id in enumerate(_new_ids(count, seed)):
        old_id, raw = templates[i % len(templates)]
        if len(new_id) != len(old_id):
            raise BenchError(f"visitor ids differ in length: {old_id!r} vs {new_id!r}")
        # Stored profiles are compressed: swap the id in the decoded profile, store it as the
        # engine would.
        profile = Profile.from_bytes(raw)
        profile.visitor_id = new_id
        yield new_id, profile.to_bytes()


def measure_dict(templates: Sequence[tuple[str, bytes]], count: int, seed: int) -> dict[str, Any]:
    before = _rss()
    partitions: dict[int, dict[str, bytes]] = {p: {} for p in range(PARTITIONS)}
    total_bytes = 0
    keys: list[str] = []
    begun = time.perf_counter()
    for i, (visitor_id, raw) in enumerate(clone_profiles(templates, count, seed)):
        partitions[i % PARTITIONS][visitor_id] = raw
        total_bytes += len(raw)
    write_s = time.perf_counter() - begun
    after = _rss()
    for partition in partitions.values():
        keys.extend(partition)
    random.Random(seed).shuffle(keys)
    begun = time.perf_counter()
    for i, visitor_id in enumerate(keys):
        if partitions[i % PARTITIONS].get(visitor_id) is None:  # the engine looks in the owning partition
            for other in partitions.values():
                if visitor_id in other:
                    break
    read_s = time.perf_counter() - begun
    return {
        "store": "dict",
        "profiles": count,
        "rss_delta_bytes": after - before,
        "rss_per_profile": (after - before) / count,
        "mean_serialized_bytes": total_bytes / count,
        "write_us": write_s / count * 1e6,
        "read_us": read_s / count * 1e6,
    }


def measure_rocksdb(
    templates: Sequence[tuple[str, bytes]], count: int, seed: int, path: Path
) -> dict[str, Any]:
    from rocksdict import Options, Rdict

    # The read order (every key, shuffled) is built before the first RSS reading: it is the
    # bench's memory, not the store's.
    keys = [visitor_id.encode() for visitor_id in _new_ids(count, seed)]
    random.Random(seed).shuffle(keys)
    before = _rss()
    db = Rdict(str(path), options=Options(raw_mode=True))
    total_bytes = 0
    try:
        begun = time.perf_counter()
        for visitor_id, raw in clone_profiles(templates, count, seed):
            db[visitor_id.encode()] = raw
            total_bytes += len(raw)
        db.flush()
        write_s = time.perf_counter() - begun
        after_write = _rss()
        begun = time.perf_counter()
        missing = sum(1 for key in keys if db.get(key) is None)
        read_s = time.perf_counter() - begun
        after_read = _rss()
    finally:
        db.close()
    if missing:
        raise BenchError(f"rocksdb lost {missing} of {count} profiles")
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "store": "rocksdb",
        "profiles": count,
        "rss_delta_bytes": after_read - before,
        "rss_per_profile": (after_read - before) / count,
        "rss_per_profile_after_write": (after_write - before) / count,
        "mean_serialized_bytes": total_bytes / count,
        "write_us": write_s / count * 1e6,
        "read_us": read_s / count * 1e6,
        "disk_bytes_per_profile": disk / count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--store", choices=["dict", "rocksdb"], default=None)
    parser.add_argument("--templates", type=Path, default=None, help="template profiles (JSON) to clone")
    parser.add_argument("--templates-out", type=Path, default=None, help="build templates, write them here")
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--template-visitors", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workload", choices=WORKLOADS, default="default", help="templates' traffic")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the RocksDB files")
    args = parser.parse_args(argv)
    from streams.logging import configure_logging

    configure_logging("WARNING")
    if args.templates_out is not None:
        built = template_profiles(args.template_visitors, args.seed, args.workload)
        encoded = [[visitor, base64.b64encode(raw).decode()] for visitor, raw in built]
        args.templates_out.write_text(json.dumps(encoded))
        return 0
    if args.templates is None or args.store is None:
        parser.error("--store and --templates are required (or --templates-out)")
    templates = [(visitor, base64.b64decode(raw)) for visitor, raw in json.loads(args.templates.read_text())]
    if args.store == "dict":
        result = measure_dict(templates, args.profiles, args.seed)
    else:
        folder = Path(tempfile.mkdtemp(prefix="bench-rocksdb-", dir=args.dir))
        try:
            result = measure_rocksdb(templates, args.profiles, args.seed, folder / "profiles")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    result["template_profiles"] = len(templates)
    result["template_mean_bytes"] = sum(len(raw) for _, raw in templates) / max(len(templates), 1)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def measure_memory(
    profiles: int,
    template_visitors: int,
    seed: int,
    workdir: Path,
    timeout: float = 600,
    kind: str = "default",
) -> dict[str, Any]:
    """Run the dict and the RocksDB measurement, each in a fresh subprocess, on templates of workload
    `kind`; return both."""
    out: dict[str, Any] = {}
    suffix = "" if kind == "default" else f"-{kind}"
    templates = workdir / f"profile-templates{suffix}.json"
    note(
        f"memory{suffix}: folding {template_visitors} simulated visitors' full histories ({kind} workload) "
        "into template profiles"
    )
    _run(
        [
            "--templates-out",
            str(templates),
            "--template-visitors",
            str(template_visitors),
            "--seed",
            str(seed),
            "--workload",
            kind,
        ],
        timeout,
    )
    for store in ("dict", "rocksdb"):
        note(f"memory{suffix}: {profiles:,} profiles in {store} (fresh process)")
        stdout = _run(
            [
                "--store",
                store,
                "--templates",
                str(templates),
                "--profiles",
                str(profiles),
                "--seed",
                str(seed),
                "--dir",
                str(workdir),
            ],
            timeout,
        )
        out[store] = json.loads(stdout.strip().splitlines()[-1])
        r = out[store]
        note(
            f"memory{suffix}: {store}: {r['rss_per_profile']:,.0f} B RSS/profile, "
            f"mean serialised {r['mean_serialized_bytes']:,.0f} B"
        )
    return out


def _run(args: list[str], timeout: float) -> str:
    argv = [sys.executable, "-m", "bench.memory", *args]
    done = subprocess.run(
        argv, env=python_env(), capture_output=True, timeout=timeout, check=False, cwd=os.getcwd()
    )
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)} failed with {done.returncode}:\n{done.stderr.decode(errors='replace')[-3000:]}"
        )
    return done.stdout.decode()


if __name__ == "__main__":
    sys.exit(main())
