"""What a worker holds per owned partition, and where it keeps the profiles: memory or RocksDB.

`ProfileStore` maps each owned partition to its `PartitionState`: the profiles, the due-timer
queue and the event-time clock. Each partition's profiles are a mapping visitor id → serialised
profile (bytes), or the live `Profile` object for a visitor a batch touched since the last
checkpoint (serialised by the checkpoint that writes its changelog record). `memory` keeps all of
them in a dict: ≈ 2.8 KB of RSS per profile of full histories (bench: `memory` step). `rocksdb`
keeps the serialised ones in a RocksDB folder per partition and only the live objects in memory:
≈ 0.4 KB of RSS per profile, at ≈ 16 µs per read and ≈ 140 µs per write (same bench step), for workers whose
partitions hold more visitors than their memory.

The changelog topic stays the source of truth in both: a partition's folder is created empty when
the partition is assigned (recovery fills it from the changelog) and deleted when it is revoked,
so nothing on disk has to agree with offsets across restarts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core.profile import Profile
from streams.core.sketch import PartitionCohorts
from streams.timers import TimerQueue

Stored = bytes | Profile


class DiskProfiles(MutableMapping[str, Stored]):
    """One partition's profiles: live objects in a dict, serialised ones in RocksDB."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict  # imported only when the disk store is chosen

        self.path = path
        shutil.rmtree(path, ignore_errors=True)  # stale state of an earlier owner: recovery refills
        path.parent.mkdir(parents=True, exist_ok=True)
        self._options = Options(raw_mode=True)
        self._db: Any = Rdict(str(path), self._options)
        self._live: dict[str, Profile] = {}
        self._count = 0

    def get(self, key: str, default: Any = None) -> Any:  # the hot path: no exception per miss
        live = self._live.get(key)
        if live is not None:
            return live
        raw = self._db.get(key.encode())
        return default if raw is None else raw

    def __getitem__(self, key: str) -> Stored:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __setitem__(self, key: str, value: Stored) -> None:
        encoded = key.encode()
        if key not in self._live and self._db.get(encoded) is None:
            self._count += 1
        if isinstance(value, Profile):
            self._live[key] = value
        else:
            self._db[encoded] = value
            self._live.pop(key, None)

    def __delitem__(self, key: str) -> None:
        encoded = key.encode()
        live = self._live.pop(key, None)
        on_disk = self._db.get(encoded) is not None
        if live is None and not on_disk:
            raise KeyError(key)
        if on_disk:
            del self._db[encoded]
        self._count -= 1

    def __iter__(self) -> Iterator[str]:
        yield from self._live
        for key in self._db.keys():
            visitor_id = key.decode()
            if visitor_id not in self._live:
                yield visitor_id

    def items(self) -> Iterator[tuple[str, Stored]]:  # type: ignore[override]
        """Every (visitor id, profile): one scan of the database, not a read per key."""
        yield from self._live.items()
        for key, raw in self._db.items():
            visitor_id = key.decode()
            if visitor_id not in self._live:
                yield visitor_id, raw

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Close the database and delete its folder (the partition is no longer owned)."""
        self._live.clear()
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)


def new_partition_profiles(store: str, folder: Path, partition: int) -> MutableMapping[str, Stored]:
    """An empty mapping for one newly assigned partition, of the configured kind."""
    if store == "memory":
        return {}
    if store == "rocksdb":
        return DiskProfiles(folder / f"p{partition}")
    raise ValueError(f"unknown profile store {store!r} (memory or rocksdb)")


def close_partition_profiles(profiles: MutableMapping[str, Stored]) -> None:
    """Release a revoked partition's profiles (a disk store closes and deletes its folder)."""
    if isinstance(profiles, DiskProfiles):
        profiles.close()


@dataclass(slots=True)
class PartitionState:
    """Everything a worker holds for one owned partition."""

    profiles: MutableMapping[str, bytes | Profile] = field(default_factory=dict)
    """Serialised profiles; a visitor touched since the last checkpoint is held decoded (the next
    batch skips decoding it) and serialised once, by the checkpoint that writes its changelog."""
    timers: TimerQueue = field(default_factory=TimerQueue)
    """Each visitor's timer (its profile's `next_check_at`)."""
    clock: float = 0.0
    """Event-time clock: newest event time seen, capped at the wall clock."""
    last_record_wall: float = 0.0
    """Wall time the partition last delivered records (for the idle fallback)."""
    cohorts: PartitionCohorts = field(default_factory=PartitionCohorts)
    """The cohort sketches of the partition's profiles (`streams.cohorts`)."""


class ProfileStore:
    """Profiles of the owned partitions, in memory, restored from the changelog on assignment."""

    def __init__(self) -> None:
        self.partitions: dict[int, PartitionState] = {}

    def get(self, visitor_id: str, partition: int) -> bytes | Profile | None:
        state = self.partitions.get(partition)
        if state is not None:
            found = state.profiles.get(visitor_id)
            if found is not None:
                return found
        # A visitor keyed inconsistently may live elsewhere; look before creating a second one.
        for other in self.partitions.values():
            found = other.profiles.get(visitor_id)
            if found is not None:
                return found
        return None

    def __len__(self) -> int:
        return sum(len(s.profiles) for s in self.partitions.values())

    def drop(self, partition: int) -> None:
        """Let go of a partition (revoked): its profiles are in the changelog."""
        state = self.partitions.pop(partition, None)
        if state is not None:
            close_partition_profiles(state.profiles)

    def drop_all(self) -> None:
        for partition in list(self.partitions):
            self.drop(partition)
