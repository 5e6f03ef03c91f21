"""The one typed settings object. Every field is read from a `TESSERA_*` environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SEGMENTS_FILE = Path(__file__).resolve().parent.parent / "segments" / "default.yaml"

EMBEDDED_SESSION_TIMEOUT_S = 4.0
EMBEDDED_HEARTBEAT_INTERVAL_S = 4.0 / 3
"""Group timeouts on the embedded Tansu broker when neither is set (`Settings.for_embedded_broker`)."""


class Site(BaseModel):
    """One website or app allowed to send events (an entry of `Settings.sites`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    write_key: SecretStr = Field(
        min_length=8, description="The site's write key: the HTTP Basic user name (or `writeKey` in a body)."
    )
    origins: tuple[str, ...] = Field(
        (),
        description="Browser origins allowed to call the collector with this key (`https://shop.example`, "
        "or `*` for any); requests without an Origin header (servers, SDKs) are not origin-checked.",
    )


class WebhookTarget(BaseModel):
    """Where one campaign's, rule's or channel's webhook messages go (an entry of `Settings.webhooks`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, description="The URL the message JSON is POSTed to.")
    secret: SecretStr = Field(
        min_length=16,
        description="HMAC-SHA256 key of the `Tessera-Signature` header (shared with the receiver).",
    )


class Settings(BaseSettings):
    """Runtime configuration; unset connection fields mean "start the embedded part"."""

    model_config = SettingsConfigDict(env_prefix="TESSERA_", extra="ignore")

    # -- where the parts are ------------------------------------------------------------------
    kafka_broker: str | None = Field(
        None, description="Kafka bootstrap servers (host:port,...); unset starts the embedded Tansu broker."
    )
    redis_url: str | None = Field(
        None, description="Redis URL (redis://host:port/0); unset starts the embedded redis-server."
    )
    clickhouse_dsn: str | None = Field(
        None,
        description="clickhouse-connect DSN (http://... or chdb:///abs/path); unset uses chDB in data_dir.",
    )
    background_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Nice value of the worker's threads but its event loop (chDB's inserts and merges; "
        "Linux; 0: as the worker's), so the loop and the broker win the CPU over background work.",
    )
    data_dir: Path = Field(Path(".tessera"), description="Folder for embedded data, logs and PID files.")

    # -- topics ---------------------------------------------------------------------------------
    events_topic: str = Field("events", description="Raw clickstream events, keyed by visitor_id.")
    dlq_topic: str = Field("events.dlq", description="Dead letters: original bytes plus a typed reason.")
    changes_topic: str = Field("segment-changes", description="Every segment entry and exit.")
    messages_topic: str = Field("messages", description="Trigger output: overlays, retargeting, e-mails.")
    changelog_topic: str = Field(
        "tessera-profiles-changelog", description="Changelog of the profile table, one record per write."
    )
    definitions_topic: str = Field(
        "tessera.definitions",
        description="Compacted topic of the definitions versions (one partition); workers run its head.",
    )
    cohorts_topic: str = Field(
        "tessera.cohorts",
        description="Compacted topic of the cohort sketches (one partition), keyed <cohort>:<partition>.",
    )
    partitions: int = Field(6, description="Partitions of the events topic (and of the changelog).")
    replication_factor: int = Field(1, description="Replication factor for topics Tessera creates.")
    group_id: str = Field("tessera", description="Kafka consumer group of the profile workers.")

    # -- processing -----------------------------------------------------------------------------
    segments_file: Path = Field(
        DEFAULT_SEGMENTS_FILE, description="YAML file with attribute and segment definitions."
    )
    batch_max_records: int = Field(5000, description="Most records fetched and processed as one batch.")
    checkpoint_interval_ms: int = Field(
        250, description="How often the commit protocol runs (ClickHouse, changelog, offsets), in ms."
    )
    checkpoint_max_rows: int = Field(
        50_000, description="Buffered ClickHouse rows that force an early checkpoint."
    )
    checkpoint_min_records: int = Field(
        100,
        ge=0,
        description="Records a checkpoint waits for after its interval, up to checkpoint_max_interval_ms.",
    )
    checkpoint_max_interval_ms: int = Field(
        1000, description="Longest time between checkpoints while anything is pending, in ms."
    )
    slow_batch_ms: float = Field(
        100.0, description="A batch step slower than this is logged (`slow_batch`) with its phases (ms)."
    )
    fetch_max_wait_ms: int = Field(
        10, description="How long the broker may hold a fetch waiting for data (ms)."
    )
    fetch_min_bytes: int = Field(
        1, ge=1, description="Bytes a fetch waits for (up to fetch_max_wait_ms) before the broker answers."
    )
    session_timeout_s: float = Field(
        6.0, description="Consumer group session timeout (s); 4 on the embedded broker unless set."
    )
    heartbeat_interval_s: float = Field(
        2.0, description="Consumer group heartbeat interval (s); 4/3 on the embedded broker unless set."
    )
    producer_linger_ms: int = Field(
        5, description="Producer linger: how long a send waits to fill a batch (ms)."
    )
    max_event_bytes: int = Field(32_768, description="Events larger than this go to the DLQ as too_large.")
    max_future_skew_s: float = Field(
        300.0, description="Events stamped further than this in the future go to the DLQ."
    )
    dedupe_window: int = Field(32, description="Recent event ids kept per visitor to drop client retries.")
    exclude_bots: bool = Field(
        True, description="Bot events build no profile and join no segment; analytics keeps them, flagged."
    )
    timers_per_batch: int = Field(
        1000,
        ge=1,
        description="Most due timers one batch evaluates; the rest go to the next batches (bounds a batch).",
    )
    idle_clock_after_s: float = Field(
        0.0,
        ge=0.0,
        description="Seconds without records before a caught-up partition's clock follows the wall clock "
        "(0: at once; a partition behind its high watermark follows event time alone).",
    )
    budget_share: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Share of each campaign's daily budget this worker may spend (1/N for N workers: the "
        "spend ledger is per worker, `streams.core.guardrails`).",
    )
    cohort_alpha: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="Relative accuracy of the cohort sketches: a threshold is within this of the exact "
        "quantile (0.01: 1 %).",
    )
    cohort_recheck_s: float = Field(
        5.0,
        ge=0.0,
        description="Most often a moved cohort threshold is taken up and its population re-evaluated (s).",
    )
    clock_lateness_s: float = Field(
        0.03,
        ge=0.0,
        description="How far a caught-up partition's clock runs behind the wall clock (s): events in flight "
        "(producer linger, one broker hop) still count before a timer fires, and timers fire within 100 ms.",
    )

    # -- serving --------------------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="Host the collector and visitor API listen on.")
    web_port: int = Field(6066, description="Port of the collector and visitor API.")
    redis_prefix: str = Field("tessera", description="Prefix of every Redis key Tessera writes.")
    admin_key: SecretStr | None = Field(
        None,
        description="Bearer key of the admin routes (/v1/definitions...); unset turns them off (403).",
    )
    sites: dict[str, Site] = Field(
        default_factory=dict,
        description="Sites allowed to send events, JSON: site id → {write_key, origins}; none configured "
        "means every collector call is refused (401) unless collector_open is set.",
    )
    collector_open: bool = Field(
        False,
        description="Local development only: the collector accepts calls without a known write key, from any "
        "origin (a known key still names its site).",
    )
    max_batch_bytes: int = Field(
        512_000, ge=1, description="Largest collector request body (a batch); larger ones are answered 413."
    )
    demo_shop_site: str | None = Field(
        None,
        description="Site id whose write key the demo shop at /shop/ uses; unset: no demo shop (404).",
    )
    geoip_db: Path | None = Field(None, description="MaxMind-format city database; unset uses DB-IP Lite.")

    # -- ClickHouse retention (TTL per table, set at start; 0 keeps rows for ever) ------------------
    clickhouse_ttl_events_days: int = Field(
        0, ge=0, description="Days the enriched events (table `events`) are kept; 0: for ever."
    )
    clickhouse_ttl_segment_changes_days: int = Field(
        0,
        ge=0,
        description="Days segment entries and exits are kept; 0: for ever (members and sizes count from "
        "the oldest change kept).",
    )
    clickhouse_ttl_messages_days: int = Field(
        0,
        ge=0,
        description="Days the messages and their funnel (tables `messages`, `conversions`, "
        "`message_outcomes`) are kept; 0: for ever.",
    )
    clickhouse_ttl_rollup_days: int = Field(
        0, ge=0, description="Days the per-minute KPI rollup (`segment_rollup_minute`) is kept; 0: for ever."
    )
    clickhouse_ttl_flow_days: int = Field(
        0,
        ge=0,
        description="Days the per-minute entries and exits (`segment_flow_minute`) are kept; 0: for ever "
        "(sizes over time count from the oldest minute kept).",
    )

    profile_store: Literal["memory", "rocksdb"] = Field(
        "memory",
        description="Where a worker keeps its partitions' profiles: memory, or RocksDB in data_dir/profiles.",
    )
    gc_gen0_threshold: int = Field(
        1_000_000,
        description="Allocations between young-generation GC passes in the worker (Python's default: 700).",
    )

    # -- delivery (`tessera deliver`, `tessera audiences export`) ----------------------------------
    delivery_group_id: str = Field(
        "tessera-delivery", description="Kafka consumer group of the delivery runner on the messages topic."
    )
    delivery_dlq_topic: str = Field(
        "messages.dlq", description="Dead letters of messages that could not be delivered (typed reason)."
    )
    delivery_routes: dict[str, str] = Field(
        default_factory=lambda: {"onsite": "inbox", "email": "email", "crm": "webhook", "ads": "audience"},
        description="JSON: message channel → adapter (inbox, webhook, email, audience); a channel without "
        "a route is dead-lettered as undeliverable.",
    )
    webhooks: dict[str, WebhookTarget] = Field(
        default_factory=dict,
        description="JSON: campaign, rule or channel → {url, secret}; a webhook message goes to its "
        "campaign's target, else its rule's, else its channel's.",
    )
    delivery_max_attempts: int = Field(
        5, ge=1, description="Most sends of one message (webhook and e-mail) before it is dead-lettered."
    )
    delivery_backoff_s: float = Field(
        0.5, ge=0.0, description="Wait before the second attempt (s); doubled before each further one."
    )
    delivery_backoff_max_s: float = Field(30.0, ge=0.0, description="Longest wait between two attempts (s).")
    delivery_timeout_s: float = Field(
        10.0, gt=0.0, description="Timeout of one webhook request or SMTP session (s)."
    )
    delivery_concurrency: int = Field(
        16, ge=1, description="Messages the delivery runner sends at once (retries of one wait in place)."
    )
    delivered_ids_ttl_s: int = Field(
        30 * 24 * 3600,
        ge=1,
        description="How long a delivered message id is remembered in Redis (redeliveries within it are "
        "dropped); longer than the messages topic's retention.",
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP server of the e-mail channel.")
    smtp_port: int = Field(25, description="SMTP port of the e-mail channel.")
    smtp_from: str = Field(
        "Tessera <tessera@localhost>", description="From address of e-mails; its domain ends each Message-ID."
    )
    smtp_username: str | None = Field(None, description="SMTP login (unset: no AUTH).")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    audience_dir: Path | None = Field(
        None, description="Folder of the ad-audience upload files; unset: <data_dir>/audiences."
    )
    audience_segments: list[str] = Field(
        default_factory=list,
        description="JSON list of the segments exported as ad audiences; empty: every segment.",
    )

    log_level: str = Field("INFO", description="Log level of Tessera and Faust.")
    log_json: bool = Field(False, description="Log JSON lines instead of console output.")

    def clickhouse_retention(self) -> dict[str, int]:
        """Table → days its rows are kept (0: for ever), for `ClickHouseSink.apply_retention`."""
        return {
            "events": self.clickhouse_ttl_events_days,
            "segment_changes": self.clickhouse_ttl_segment_changes_days,
            "messages": self.clickhouse_ttl_messages_days,
            "conversions": self.clickhouse_ttl_messages_days,
            "message_outcomes": self.clickhouse_ttl_messages_days,
            "segment_rollup_minute": self.clickhouse_ttl_rollup_days,
            "segment_flow_minute": self.clickhouse_ttl_flow_days,
        }

    def for_embedded_broker(self) -> Settings:
        """These settings for the embedded Tansu broker: shorter group timeouts, unless either is set.

        6 s is Kafka's smallest session timeout by default (`group.min.session.timeout.ms`); Tansu has
        no minimum but answers every JoinGroup only after half the session timeout, in whole seconds
        (measured: 3 s at 6 s, 2 s at 4 s or 3 s, 1 s at 2 s), and removes a member that stopped
        without leaving after a full session timeout (4 s saves a second on each). Heartbeats wait
        while a batch blocks the event loop (≈ 0.5 s for 5,000 records, measured); with one every
        4/3 s a member survives stalls of up to ≈ 2.7 s.
        """
        if self.model_fields_set & {"session_timeout_s", "heartbeat_interval_s"}:
            return self
        return self.model_copy(
            update={
                "session_timeout_s": EMBEDDED_SESSION_TIMEOUT_S,
                "heartbeat_interval_s": EMBEDDED_HEARTBEAT_INTERVAL_S,
            }
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
