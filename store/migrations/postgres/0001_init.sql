-- Keys, hourly usage, snippets and fleet budgets (Postgres dialect; the
-- SQLite file of the same number makes the same tables).

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    rate_per_s DOUBLE PRECISION,
    burst BIGINT,
    max_concurrent BIGINT,
    cpu_s_per_day DOUBLE PRECISION,
    max_timeout_s DOUBLE PRECISION,
    max_memory_mb BIGINT,
    weight BIGINT
);

CREATE TABLE usage_hourly (
    key_id TEXT NOT NULL,
    hour_start BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    jobs BIGINT NOT NULL,
    cpu_us BIGINT NOT NULL,
    wall_us BIGINT NOT NULL,
    peak_memory_bytes BIGINT NOT NULL,
    PRIMARY KEY (key_id, hour_start, outcome)
);
CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour_start);

CREATE TABLE usage_batches (
    batch_id TEXT PRIMARY KEY,
    applied_at BIGINT NOT NULL
);
CREATE INDEX usage_batches_by_age ON usage_batches (applied_at);

CREATE TABLE snippets (
    id TEXT PRIMARY KEY,
    key_id TEXT,
    script TEXT NOT NULL,
    input TEXT,
    limits TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE budget_counters (
    key_id TEXT NOT NULL,
    counter TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    granted BIGINT NOT NULL,
    PRIMARY KEY (key_id, counter, window_start)
);
CREATE INDEX budget_counters_by_end ON budget_counters (window_end);

CREATE TABLE slot_holds (
    key_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    held BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (key_id, instance_id)
);
CREATE INDEX slot_holds_by_instance ON slot_holds (instance_id);
