"""Infrastructure support: the embedded local stack, topic specs, compose and Grafana files.

Nothing here imports Tessera's other packages; every function takes plain arguments.
"""

from infra.stack import (
    EmbeddedStack,
    StackEndpoints,
    StackError,
    StackInUseError,
    free_port,
    stop_stale,
)
from infra.topics import TopicError, TopicSpec, default_topic_specs, ensure_topics

__all__ = [
    "EmbeddedStack",
    "StackEndpoints",
    "StackError",
    "StackInUseError",
    "TopicError",
    "TopicSpec",
    "default_topic_specs",
    "ensure_topics",
    "free_port",
    "stop_stale",
]
