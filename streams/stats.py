"""The worker's counters, as `/v1/status` reports them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class EngineStats:
    """What the engine has done since the process started."""

    batches: int = 0
    records: int = 0
    events_applied: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    replayed: int = 0
    changes: int = 0
    messages: int = 0
    conversions: int = 0
    """Purchases attributed to a message (`BatchResult.conversions`)."""
    suppressed: dict[str, int] = field(default_factory=dict)
    """Messages a guard rail refused, by reason (`BatchResult.suppressed`)."""
    timer_evaluations: int = 0
    bots: int = 0
    """Bot events kept out of profiles and segments (`TESSERA_EXCLUDE_BOTS`); ClickHouse has them."""
    restarts: int = 0
    checkpoints: int = 0
    changelog_writes: int = 0
    recovered_records: int = 0
    recovery_seconds: float = 0.0
    committed: dict[int, int] = field(default_factory=dict)
    slow_batches: int = 0
    loop_lag_max_ms: float = 0.0
    """Longest time the event loop was blocked (a 10 ms watchdog timer's lateness)."""
    loop_stalls_over_50ms: int = 0
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "records": self.records,
            "events_applied": self.events_applied,
            "dead_letters": self.dead_letters,
            "duplicates": self.duplicates,
            "replayed": self.replayed,
            "changes": self.changes,
            "messages": self.messages,
            "conversions": self.conversions,
            "suppressed": dict(sorted(self.suppressed.items())),
            "timer_evaluations": self.timer_evaluations,
            "bots": self.bots,
            "restarts": self.restarts,
            "checkpoints": self.checkpoints,
            "changelog_writes": self.changelog_writes,
            "recovered_records": self.recovered_records,
            "recovery_seconds": round(self.recovery_seconds, 3),
            "committed": {str(p): o for p, o in sorted(self.committed.items())},
            "slow_batches": self.slow_batches,
            "loop_lag_max_ms": round(self.loop_lag_max_ms, 1),
            "loop_stalls_over_50ms": self.loop_stalls_over_50ms,
            "ready_after_s": None if self.ready_at is None else round(self.ready_at - self.started_at, 3),
        }
