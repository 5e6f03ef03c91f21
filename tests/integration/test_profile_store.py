"""The RocksDB profile store (`TESSERA_PROFILE_STORE=rocksdb`) behaves as the engine's dict does."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.core.profile import Profile, new_profile
from streams.profile_store import DiskProfiles, close_partition_profiles, new_partition_profiles


def test_live_objects_and_serialised_profiles_read_back(tmp_path: Path) -> None:
    store = DiskProfiles(tmp_path / "p0")
    live = new_profile("v1")
    store["v1"] = live  # touched by a batch: held as the object
    store["v2"] = new_profile("v2").to_bytes()  # restored or checkpointed: on disk
    assert store.get("v1") is live and store["v1"] is live
    assert isinstance(store["v2"], bytes) and Profile.from_bytes(store["v2"]).visitor_id == "v2"
    assert store.get("v3") is None and "v3" not in store and "v2" in store
    with pytest.raises(KeyError):
        store["v3"]
    assert len(store) == 2

    store["v1"] = live.to_bytes()  # the checkpoint serialised it: the object goes, the bytes stay
    assert isinstance(store["v1"], bytes) and len(store) == 2
    store["v2"] = new_profile("v2")  # touched again
    assert sorted(store) == ["v1", "v2"] and dict(store.items()).keys() == {"v1", "v2"}

    assert store.pop("v1") is not None and len(store) == 1 and "v1" not in store
    assert store.pop("missing", None) is None
    del store["v2"]
    assert len(store) == 0 and list(store) == []


def test_a_partition_folder_starts_empty_and_goes_with_the_partition(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    first = new_partition_profiles("rocksdb", folder, 3)
    first["v1"] = new_profile("v1").to_bytes()
    close_partition_profiles(first)
    assert not (folder / "p3").exists()

    (folder / "p3").mkdir(parents=True)
    (folder / "p3" / "stale").write_text("left by a killed worker")
    again = new_partition_profiles("rocksdb", folder, 3)
    assert len(again) == 0 and list(again) == [] and not (folder / "p3" / "stale").exists()
    close_partition_profiles(again)

    assert new_partition_profiles("memory", folder, 0) == {}
    with pytest.raises(ValueError, match="unknown profile store"):
        new_partition_profiles("redis", folder, 0)
