-- Keys, hourly usage, snippets and fleet budgets (SQLite dialect; the
-- Postgres file of the same number makes the same tables).
-- STRICT: a value of the wrong type (e.g. an integer sum that overflowed to
-- REAL) is an error, never stored.

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    rate_per_s REAL,
    burst INTEGER,
    max_concurrent INTEGER,
    cpu_s_per_day REAL,
    max_timeout_s REAL,
    max_memory_mb INTEGER,
    weight INTEGER
) STRICT;

CREATE TABLE usage_hourly (
    key_id TEXT NOT NULL,
    hour_start INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    jobs INTEGER NOT NULL,
    cpu_us INTEGER NOT NULL,
    wall_us INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    PRIMARY KEY (key_id, hour_start, outcome)
) STRICT;
CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour_start);

CREATE TABLE usage_batches (
    batch_id TEXT PRIMARY KEY NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT;
CREATE INDEX usage_batches_by_age ON usage_batches (applied_at);

CREATE TABLE snippets (
    id TEXT PRIMARY KEY NOT NULL,
    key_id TEXT,
    script TEXT NOT NULL,
    input TEXT,
    limits TEXT,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE budget_counters (
    key_id TEXT NOT NULL,
    counter TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    granted INTEGER NOT NULL,
    PRIMARY KEY (key_id, counter, window_start)
) STRICT;
CREATE INDEX budget_counters_by_end ON budget_counters (window_end);

CREATE TABLE slot_holds (
    key_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    held INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (key_id, instance_id)
) STRICT;
CREATE INDEX slot_holds_by_instance ON slot_holds (instance_id);
