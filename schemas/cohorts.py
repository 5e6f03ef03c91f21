"""Cohort sketches as published on the compacted cohorts topic (`tessera.cohorts`).

The topic has one partition. Each key ``<cohort>:<partition>`` holds the latest `CohortSketchRecord`
of one events partition for one cohort: the quantile sketch of the values its profiles hold in the
cohort's population (the cohort's attribute, where > 0). The owner of a partition publishes it at
its checkpoints when it changed; every worker reads the topic, merges the latest sketch of every
partition (bucket counts add up) and takes the cohort's quantile of the merged sketch: the threshold
conditions read. Compaction keeps the latest record of each key.

The sketch (DDSketch's log buckets): with relative accuracy α and γ = (1 + α) / (1 − α), bucket i
holds the values in (γ^(i−1), γ^i]; `counts[k]` is the count of bucket `offset + k`. A quantile read
from it is within α (relative) of the exact value of the same rank.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


def cohort_key(cohort: str, partition: int) -> str:
    """The topic key of one partition's sketch of `cohort`."""
    return f"{cohort}:{partition}"


class CohortSketchRecord(BaseModel):
    """Version 1. One events partition's sketch of one cohort's population."""

    schema_version: Literal[1] = 1
    cohort: str
    partition: int = Field(ge=0)
    of: str
    """What the cohort is a quantile of, as its definition says: ``spend_365d[electronics]`` or
    ``purchases_365d``. Readers merge only the records of the ``of`` their definitions name."""
    alpha: float = Field(gt=0.0, lt=1.0)
    """Relative accuracy of the sketch (sketches of different α are not merged)."""
    offset: int
    """Index of the bucket `counts[0]` counts."""
    counts: list[int] = Field(default_factory=list)
    """Values per bucket from `offset` on (0 where none)."""
    count: int = Field(ge=0)
    """Values counted: the partition's population."""
    definition_version: str
    """The definitions version the publishing worker ran."""
    published_at: datetime
