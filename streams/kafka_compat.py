"""Where aiokafka and the embedded broker disagree: the one patch of aiokafka the worker applies.

aiokafka offers no public hook for this, so it stays a patch of a private method, kept here in one
named place and applied once by `streams.app.run_worker`.
"""

from __future__ import annotations

from typing import Any


def leave_group_from_first_generation() -> None:
    """Let a stopping consumer leave its group even in generation 0 (idempotent).

    aiokafka sends LeaveGroup only from generation 1 (Kafka's first generation); the embedded
    Tansu broker numbers a group's first generation 0. Without a LeaveGroup the member of a worker
    that stopped in generation 0 stays in the group until its session times out, and the next
    worker's join waits for it: ≈ 11 s instead of 3 s at a 6 s session timeout (measured).
    LeaveGroup carries no generation, so only aiokafka's guard reads the value set here.
    """
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    original = GroupCoordinator._maybe_leave_group
    if getattr(original, "_leaves_generation_zero", False):
        return

    async def maybe_leave_group(self: Any) -> None:
        if self.generation == 0 and self.member_id:
            self.generation = 1
        await original(self)

    maybe_leave_group._leaves_generation_zero = True  # type: ignore[attr-defined]
    GroupCoordinator._maybe_leave_group = maybe_leave_group
