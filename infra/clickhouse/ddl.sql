-- Tessera analytics schema (ClickHouse). Applied by `sinks.clickhouse.ClickHouseSink.apply_ddl()`
-- at start; every statement is idempotent (IF NOT EXISTS), so applying it twice is a no-op.
-- The file runs as-is against a ClickHouse server (database `tessera`); the sink substitutes
-- another database name when configured. Statements end with `;` at the end of a line and
-- comments are whole lines starting with `--`, so the sink's splitter stays trivial.
-- Changing a table later needs an ALTER migration: IF NOT EXISTS never alters an existing table.
--
-- Idempotency, in two layers (Tessera is at-least-once end to end):
--  1. Every insert carries `insert_deduplication_token = '<batch token>:<table>'`, and every
--     MergeTree table keeps the hashes of its last 1000 inserted blocks
--     (`non_replicated_deduplication_window`), so a batch retried with the same token is dropped
--     at insert time, before any merge.
--  2. A replay after a crash may cut the same events into batches with other boundaries, hence
--     other tokens. The tables are ReplacingMergeTree keyed by the row's id, and every reader
--     that counts goes through `FINAL` (or the KPI view, which does) or counts distinct ids (the
--     funnel's outcomes), so duplicates never count.

CREATE DATABASE IF NOT EXISTS tessera;

-- One row per enriched event, with the visitor's segments right after that event.
-- Dedup key: ReplacingMergeTree collapses rows with an equal sorting key inside one partition.
-- The key is (toStartOfMinute(event_time), event_id) and the partition is toYYYYMM(event_time):
-- event_time belongs to the event itself (a replayed Kafka record or a client retry carries the
-- same messageId AND the same timestamp), so both are functions of event_id and collapsing on
-- the key is collapsing on event_id. Leading with the minute lets time-range dashboard queries
-- (WHERE event_time BETWEEN ..., and the KPI view's `minute` column) use the primary index;
-- `ORDER BY event_id` alone would scan a whole month for a 15-minute panel.
-- The guard against an id arriving with two different timestamps is `totals()`: it reports
-- count() next to uniqExact(event_id) over `events FINAL`.
CREATE TABLE IF NOT EXISTS tessera.events
(
    event_id        String,
    visitor_id      String,
    user_id         Nullable(String),
    session_id      Nullable(String),
    event_time      DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    type            LowCardinality(String),
    page_url        String,
    page_path       String,
    referrer        String,
    product_id      String,
    category        LowCardinality(String),
    order_id        String,
    revenue         Float64,
    currency        LowCardinality(String),
    coupon          LowCardinality(String),
    items           UInt32,
    device_category LowCardinality(String),
    os              LowCardinality(String),
    browser         LowCardinality(String),
    country         LowCardinality(String),
    region          LowCardinality(String),
    city            LowCardinality(String),
    lat             Nullable(Float64),
    lon             Nullable(Float64),
    traffic_source  LowCardinality(String),
    traffic_name    LowCardinality(String),
    traffic_keyword String,
    utm_campaign    LowCardinality(String),
    in_app_browser  LowCardinality(String),
    time_zone       LowCardinality(String),
    is_bot          Bool ALIAS device_category = 'bot',
    segments        Array(LowCardinality(String)),
    `partition`     Int32,
    `offset`        Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (toStartOfMinute(event_time), event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The columns below came after the first release of `events`: on a table made before them this adds
-- them (empty strings in old rows), on one the statement above just made it changes nothing.
-- traffic_source is the medium (search, social, email, paid, ai_assistant, campaign, referral,
-- internal, direct); traffic_keyword the search keyword or utm_term. Bot events are stored (they
-- only stay out of profiles and segments): reports exclude them with `WHERE NOT is_bot`.
ALTER TABLE tessera.events
    ADD COLUMN IF NOT EXISTS traffic_keyword String AFTER traffic_name,
    ADD COLUMN IF NOT EXISTS in_app_browser LowCardinality(String) AFTER utm_campaign,
    ADD COLUMN IF NOT EXISTS time_zone LowCardinality(String) AFTER in_app_browser,
    ADD COLUMN IF NOT EXISTS is_bot Bool ALIAS device_category = 'bot' AFTER time_zone;

-- Segment membership changes. Dedup key (segment, change_id): a change is about exactly one
-- segment, so this collapses on change_id. Not partitioned by time on purpose: `members`
-- (entered - exited over all time) must be exact, and a partition expression is one more
-- column that would have to be identical across replays for rows to collapse. The table holds
-- one row per membership change, orders of magnitude fewer than events.
CREATE TABLE IF NOT EXISTS tessera.segment_changes
(
    change_id          String,
    visitor_id         String,
    segment            LowCardinality(String),
    transition         Enum8('entered' = 1, 'exited' = 2),
    event_time         DateTime64(3, 'UTC'),
    processed_at       DateTime64(3, 'UTC'),
    definition_version LowCardinality(String),
    reason             LowCardinality(String),
    trigger_event_id   String,
    attributes         String
)
ENGINE = ReplacingMergeTree
ORDER BY (segment, change_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Messages decided by the trigger engine. Dedup key: message_id (same reasoning as above).
CREATE TABLE IF NOT EXISTS tessera.messages
(
    message_id String,
    visitor_id String,
    kind       LowCardinality(String),
    channel    LowCardinality(String),
    rule       LowCardinality(String),
    segment    LowCardinality(String),
    event_time DateTime64(3, 'UTC'),
    expires_at Nullable(DateTime64(3, 'UTC')),
    payload    String
)
ENGINE = ReplacingMergeTree
ORDER BY message_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Message v2's fields came after the first release of `messages` (the same migration as `events`'):
-- an older table gains them, its old rows reading '' / false / 0. `holdout` rows are the records of a
-- campaign's holdout group (never delivered), kept so the funnel can compare conversion rates.
-- A field the message does not carry is '' (no campaign, no variant, not a journey step).
ALTER TABLE tessera.messages
    ADD COLUMN IF NOT EXISTS campaign LowCardinality(String) AFTER payload,
    ADD COLUMN IF NOT EXISTS variant LowCardinality(String) AFTER campaign,
    ADD COLUMN IF NOT EXISTS holdout Bool AFTER variant,
    ADD COLUMN IF NOT EXISTS journey LowCardinality(String) AFTER holdout,
    ADD COLUMN IF NOT EXISTS step LowCardinality(String) AFTER journey,
    ADD COLUMN IF NOT EXISTS cost Float64 AFTER step;

-- Purchases the engine attributed to a message (`BatchResult.conversions`: last touch within the
-- attribution window, holdout records included): the one attribution rule, which the funnel reads
-- instead of deriving its own. Dedup key (message_id, order_id): a conversion's id, the same in a
-- replay. Not partitioned by time, like `segment_changes` (few rows; exact counts over all time).
CREATE TABLE IF NOT EXISTS tessera.conversions
(
    message_id   String,
    order_id     String,
    visitor_id   String,
    campaign     LowCardinality(String),
    variant      LowCardinality(String),
    holdout      Bool,
    journey      LowCardinality(String),
    step         LowCardinality(String),
    rule         LowCardinality(String),
    message_time DateTime64(3, 'UTC'),
    event_time   DateTime64(3, 'UTC'),
    value        Float64,
    currency     LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (message_id, order_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- What visitors did with a message: one row per outcome event (`custom` events message_shown,
-- message_clicked, message_dismissed with their `message_id`), which the sink picks out of a
-- batch's events itself. Not a materialized view over `events` and no column there: the events
-- insert is the worker's hottest path and outcomes are rare. Dedup key (message_id, event_id).
-- Cost: none per event (the sink sets custom events aside while it builds the events rows); a
-- checkpoint that carries outcomes pays one more small insert, as one carrying messages or
-- conversions does (≈ 15-20 ms CPU each in the embedded chDB, measured with 2-row inserts).
CREATE TABLE IF NOT EXISTS tessera.message_outcomes
(
    event_id   String,
    message_id String,
    visitor_id String,
    outcome    Enum8('shown' = 1, 'clicked' = 2, 'dismissed' = 3),
    event_time DateTime64(3, 'UTC'),
    display    LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (message_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Per minute and segment: events, distinct visitors, purchases, revenue.
-- A plain VIEW over `events FINAL`, not an AggregatingMergeTree fed by a materialized view:
-- an MV aggregates each inserted block when it is inserted. A retried identical batch would be
-- dropped (deduplicate_blocks_in_dependent_materialized_views), but a replay cut into other
-- batches (other token) would be added a second time, and sums/counts in an aggregate state
-- cannot be un-added. The view recomputes from deduplicated events, so it is exact under both
-- kinds of retry by construction. Cost: the work happens at query time; the sorting key leads
-- with toStartOfMinute(event_time), so a `WHERE minute BETWEEN ...` filter on the view is
-- pushed down and uses the primary index. `visitors_state` lets a reader merge distinct visitors
-- over several minutes (uniqExactMerge) instead of summing per-minute counts; columns a query
-- does not select are not computed.
-- An event whose visitor is in no segment produces no row here (arrayJoin of an empty array).
CREATE VIEW IF NOT EXISTS tessera.segment_kpis_minute AS
SELECT
    toStartOfMinute(event_time)   AS minute,
    arrayJoin(segments)           AS segment,
    count()                       AS events,
    uniqExact(visitor_id)         AS visitors,
    countIf(type = 'purchase')    AS purchases,
    sum(revenue)                  AS revenue,
    uniqExactState(visitor_id)    AS visitors_state
FROM tessera.events FINAL
GROUP BY minute, segment;

-- Rollups for dashboards, the persona report and the KPI module (`sinks/kpis.py`).
--
-- Exactness under retries and replays. A materialized view aggregates each block as it is
-- inserted, before ReplacingMergeTree has collapsed anything: a batch retried with the same token is
-- dropped before the view runs (its block hash is known), but a replay cut into other batches
-- reaches the view a second time. So no rollup column is a count or a sum: a row holds the set of its
-- events, one tuple (event_id, visitor_id, session_id, kind, revenue) each, with kind 1 for a page
-- view, 2 for a purchase, 0 otherwise. A replayed event brings the same tuple again, and a set
-- holds it once: merges collapse equal tuples (`groupUniqArrayArray`), and every KPI counts
-- distinct ids at query time (`sinks.kpis`: uniqExact of event ids for events, page views and
-- purchases, of visitor ids for visitors and buyers, of (visitor, session) for sessions; revenue
-- sums the distinct (event_id, revenue) pairs of purchases), which also makes the counts over any
-- range of minutes exact (visitors over an hour are not the sum of visitors per minute). This holds
-- as long as a replayed row carries the same values as the first one (the same event_id,
-- event_time, revenue and segments): the commit protocol replays the same events into the same
-- profiles.
-- Why tuples and not one uniqExact state per measure (this table's first form, still migrated by
-- `ClickHouseSink.apply_ddl`): a state is a hash table of its own, set up and merged per row and
-- measure, and a replay of history puts nearly every event in a (segment, minute) of its own, so
-- seven states per row cost more than the ids they held. Measured on the bench workload's rows (chDB
-- in-process, 14,000 rows per insert, CPU of the inserts, the merges meanwhile and a final merge,
-- per event): 15.5 us without a rollup, 42-51 with seven states, 27-30 with the tuple set.
-- With a ClickHouse server the cost is the server's; with the embedded chDB it is the worker
-- process's. The segment `*` is every visitor (bots excluded): the baseline of the KPIs.
-- A rollup holds only what was inserted after it was created; rows inserted before can be added with
-- `INSERT INTO tessera.segment_rollup_minute SELECT ... FROM tessera.events` using the view's SELECT
-- (safe to repeat or to overlap new inserts, for the reason above; the migration does so).
-- Retention: `TESSERA_CLICKHOUSE_TTL_*_DAYS` (streams/settings.py) sets a TTL per table at start
-- (`ClickHouseSink.apply_retention`); 0 keeps rows for ever.
CREATE TABLE IF NOT EXISTS tessera.segment_rollup_minute
(
    minute  DateTime('UTC'),
    segment LowCardinality(String),
    items   SimpleAggregateFunction(groupUniqArrayArray, Array(Tuple(String, String, Nullable(String), UInt8, Float64)))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (segment, minute)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS tessera.segment_rollup_minute_mv
TO tessera.segment_rollup_minute AS
SELECT
    toStartOfMinute(event_time)                                                     AS minute,
    arrayJoin(if(device_category = 'bot', segments, arrayPushFront(segments, '*'))) AS segment,
    groupArray((event_id, visitor_id, session_id, toUInt8(multiIf(type = 'page_view', 1, type = 'purchase', 2, 0)), revenue)) AS items
FROM tessera.events
GROUP BY minute, segment;

-- Entries and exits per minute and segment, as sets of change ids (exact for the same reason).
-- A segment's size at the end of a minute is the running sum of entries minus exits up to it, so
-- this table must reach back to the first change: its TTL is off unless set, and a TTL on it makes
-- sizes count from the oldest minute kept.
CREATE TABLE IF NOT EXISTS tessera.segment_flow_minute
(
    minute  DateTime('UTC'),
    segment LowCardinality(String),
    entries AggregateFunction(uniqExact, String),
    exits   AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (segment, minute)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS tessera.segment_flow_minute_mv
TO tessera.segment_flow_minute AS
SELECT
    toStartOfMinute(event_time)                        AS minute,
    segment,
    uniqExactStateIf(change_id, transition = 'entered') AS entries,
    uniqExactStateIf(change_id, transition = 'exited')  AS exits
FROM tessera.segment_changes
GROUP BY minute, segment;
