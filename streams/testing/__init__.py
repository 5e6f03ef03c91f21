"""Testing helpers shipped with Tessera: the tests, the bench and `tessera demo` use them alike.

- `wait`: `wait_until` / `async_wait_until` (a condition with a deadline, never a sleep),
  `WaitTimeout`, `unique_name`;
- `worker`: `WorkerConfig` and `WorkerProcess`, a `tessera worker` subprocess (spawn, /healthz ready,
  its web API, committed offsets, stop by PID), `wait_on_worker`, `ChildProcess` for other children;
- `kafka`: topics read to their Fetch high watermark, a group's committed offsets;
- `replay`: `replay_events` / `replay_records` / `replay_batches`, the profiles the pure core folds
  from a stream;
- `sites`: a site's write key for tests that post to a collector (`sites_env`, `basic_auth`);
- `webhook`: a local webhook receiver on a free port (`serve_webhook`, `WebhookReceiver`);
- `fakes`: in-memory fakes of the analytics sink, the serving store, the producer and the consumer
  (and a producer appending to that consumer's topics), recording their calls in one `CallLog`.
"""

from streams.testing.fakes import (
    CallLog,
    FakeAck,
    FakeAnalyticsSink,
    FakeConsumer,
    FakeProducer,
    FakeServingStore,
    FakeTopicProducer,
    changelog_records,
)
from streams.testing.kafka import fetch_to_highwater, group_committed, read_topic
from streams.testing.replay import event_records, replay_batches, replay_events, replay_records
from streams.testing.sites import TEST_SITE, TEST_WRITE_KEY, basic_auth, sites_env
from streams.testing.wait import (
    DEFAULT_INTERVAL_S,
    DEFAULT_TIMEOUT_S,
    WaitTimeout,
    async_wait_until,
    unique_name,
    wait_until,
)
from streams.testing.worker import (
    NOT_ANSWERING,
    ChildProcess,
    ProcessExited,
    WorkerConfig,
    WorkerProcess,
    wait_on_worker,
)

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_TIMEOUT_S",
    "NOT_ANSWERING",
    "TEST_SITE",
    "TEST_WRITE_KEY",
    "CallLog",
    "ChildProcess",
    "FakeAck",
    "FakeAnalyticsSink",
    "FakeConsumer",
    "FakeProducer",
    "FakeServingStore",
    "FakeTopicProducer",
    "ProcessExited",
    "WaitTimeout",
    "WorkerConfig",
    "WorkerProcess",
    "async_wait_until",
    "basic_auth",
    "changelog_records",
    "event_records",
    "fetch_to_highwater",
    "group_committed",
    "read_topic",
    "replay_batches",
    "replay_events",
    "replay_records",
    "sites_env",
    "unique_name",
    "wait_on_worker",
    "wait_until",
]
