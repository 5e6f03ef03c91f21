"""Tessera's sinks, each behind a small interface: ClickHouse analytics and Redis serving.

Imports only `schemas` (and third-party libraries).
"""

from sinks.clickhouse import AnalyticsBatch, AnalyticsSink, ClickHouseSink, SegmentReportRow
from sinks.redis_serving import RedisServing, ServingStore, VisitorUpdate

__all__ = [
    "AnalyticsBatch",
    "AnalyticsSink",
    "ClickHouseSink",
    "RedisServing",
    "SegmentReportRow",
    "ServingStore",
    "VisitorUpdate",
]
