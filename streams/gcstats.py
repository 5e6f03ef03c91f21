"""Time spent in CPython's cyclic garbage collector, per generation (for /v1/status and bench)."""

from __future__ import annotations

import gc
import time
from typing import Any

_collections = [0, 0, 0]
_seconds = [0.0, 0.0, 0.0]
_longest = [0.0, 0.0, 0.0]
_started = 0.0
_installed = False


def _callback(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
    else:
        generation = info.get("generation", 2)
        took = time.perf_counter() - _started
        _collections[generation] += 1
        _seconds[generation] += took
        if took > _longest[generation]:
            _longest[generation] = took


def install() -> None:
    """Start timing collections (idempotent); the callback costs two clock reads per collection."""
    global _installed
    if not _installed:
        gc.callbacks.append(_callback)
        _installed = True


def snapshot() -> dict[str, Any]:
    return {
        "collections": list(_collections),
        "seconds": [round(s, 4) for s in _seconds],
        "total_seconds": round(sum(_seconds), 4),
        "longest_ms": [round(s * 1000, 1) for s in _longest],
    }
