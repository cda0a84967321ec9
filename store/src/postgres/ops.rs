//! Each store operation as Postgres statements, on one pooled connection.
//!
//! Times come from the database's clock, so that every instance agrees on
//! them. Atomicity across instances: a counter window's row is locked with
//! `SELECT … FOR UPDATE`; a key's slots are serialized by a transaction-level
//! advisory lock on the key; usage upserts touch rows in a fixed order.

use std::time::Duration;

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use super::error::{is_unique_violation, OpError};
use crate::budgets::{self, CounterGrant, InstanceId, Purged, SlotHold, Window, COUNTER_GRACE};
use crate::error::StoreError;
use crate::keys::{validate_name, KeyLimits, KeyRecord, LimitsPatch};
use crate::migrations;
use crate::rows::{
    self, KeyRow, LimitColumns, SnippetRow, UsageRow, KEY_COLUMNS, SNIPPET_COLUMNS, USAGE_COLUMNS,
};
use crate::snippets::{self, NewSnippet, Snippet, SnippetDeletion, SnippetId};
use crate::token::{new_token, KeyId, Token};
use crate::usage::{self, Recorded, UsageDelta, UsageFilter, UsageTotal, BATCH_RETENTION};

type Result<T> = std::result::Result<T, OpError>;

const NOW_S: &str = "floor(extract(epoch FROM clock_timestamp()))::bigint";
const NOW_MS: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// `pg_advisory_xact_lock(bigint)` key of the migration ("pyexecmg").
const MIGRATION_LOCK: i64 = 0x7079_6578_6563_6d67;
/// First half of `pg_advisory_xact_lock(int, int)` keys of slot locks
/// (the two-int key space does not overlap the bigint one).
const SLOT_LOCK_CLASS: i32 = 0x7079_736c;

const ID_ATTEMPTS: usize = 3;

fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx).map_err(|e| {
        OpError::Store(StoreError::Corrupt(format!(
            "unexpected value in column {idx}: {e}"
        )))
    })
}

fn key_row(row: &Row) -> Result<KeyRow> {
    Ok(KeyRow {
        id: get(row, 0)?,
        name: get(row, 1)?,
        secret_hash: get(row, 2)?,
        created_at: get(row, 3)?,
        revoked_at: get(row, 4)?,
        limits: LimitColumns {
            rate_per_s: get(row, 5)?,
            burst: get(row, 6)?,
            max_concurrent: get(row, 7)?,
            cpu_s_per_day: get(row, 8)?,
            max_timeout_s: get(row, 9)?,
            max_memory_mb: get(row, 10)?,
            weight: get(row, 11)?,
        },
    })
}

fn snippet_row(row: &Row) -> Result<SnippetRow> {
    Ok(SnippetRow {
        id: get(row, 0)?,
        key_id: get(row, 1)?,
        script: get(row, 2)?,
        input: get(row, 3)?,
        limits: get(row, 4)?,
        created_at: get(row, 5)?,
    })
}

/// Applies the pending migrations in one transaction under an advisory
/// lock: instances starting together migrate once, the others wait for it
/// (up to `wait`) and then find nothing to do.
pub(super) async fn migrate(client: &mut Object, wait: Duration) -> Result<()> {
    let tx = client.transaction().await?;
    let ms = wait.as_millis();
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}"
    ))
    .await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(migrations::CREATE_SCHEMA_MIGRATIONS)
        .await?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM schema_migrations",
            &[],
        )
        .await?;
    let found: i64 = get(&row, 0)?;
    for migration in migrations::pending(found, migrations::POSTGRES)? {
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            &format!(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, {NOW_S})"
            ),
            &[&migration.version, &migration.name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn ping(client: &mut Object) -> Result<()> {
    client.simple_query("SELECT 1").await?;
    Ok(())
}

pub(super) async fn create_key(
    client: &mut Object,
    name: &str,
    limits: &KeyLimits,
) -> Result<(KeyRecord, Token)> {
    validate_name(name)?;
    limits.validate()?;
    let l = LimitColumns::of(limits);
    let sql = format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) \
         VALUES ($1, $2, $3, {NOW_S}, NULL, $4, $5, $6, $7, $8, $9, $10) RETURNING created_at"
    );
    let stmt = client.prepare_cached(&sql).await?;
    for _ in 0..ID_ATTEMPTS {
        let (id, token, secret_hash) = new_token();
        let inserted = client
            .query_one(
                &stmt,
                &[
                    &id.as_str(),
                    &name,
                    &&secret_hash.as_bytes()[..],
                    &l.rate_per_s,
                    &l.burst,
                    &l.max_concurrent,
                    &l.cpu_s_per_day,
                    &l.max_timeout_s,
                    &l.max_memory_mb,
                    &l.weight,
                ],
            )
            .await;
        match inserted {
            Ok(row) => {
                let record = KeyRecord {
                    id,
                    name: name.to_owned(),
                    secret_hash,
                    created_at: get(&row, 0)?,
                    revoked_at: None,
                    limits: *limits,
                };
                return Ok((record, token));
            }
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Internal("fresh random key ids kept colliding".into()).into())
}

pub(super) async fn list_keys(client: &mut Object) -> Result<Vec<KeyRecord>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
    let stmt = client.prepare_cached(&sql).await?;
    let rows = client.query(&stmt, &[]).await?;
    rows.iter()
        .map(|row| Ok(key_row(row)?.into_record()?))
        .collect()
}

pub(super) async fn get_key(client: &mut Object, id: &KeyId) -> Result<Option<KeyRecord>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
    let stmt = client.prepare_cached(&sql).await?;
    let row = client.query_opt(&stmt, &[&id.as_str()]).await?;
    Ok(row
        .map(|r| key_row(&r))
        .transpose()?
        .map(KeyRow::into_record)
        .transpose()?)
}

pub(super) async fn set_limits(
    client: &mut Object,
    id: &KeyId,
    patch: &LimitsPatch,
) -> Result<KeyRecord> {
    let tx = client.transaction().await?;
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE");
    let stmt = tx.prepare_cached(&sql).await?;
    let Some(row) = tx.query_opt(&stmt, &[&id.as_str()]).await? else {
        return Err(StoreError::NotFound.into());
    };
    let mut record = key_row(&row)?.into_record()?;
    record.limits = record.limits.patched(patch);
    record.limits.validate()?;
    let l = LimitColumns::of(&record.limits);
    let stmt = tx
        .prepare_cached(
            "UPDATE api_keys SET rate_per_s = $2, burst = $3, max_concurrent = $4, \
             cpu_s_per_day = $5, max_timeout_s = $6, max_memory_mb = $7, weight = $8 \
             WHERE id = $1",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &id.as_str(),
            &l.rate_per_s,
            &l.burst,
            &l.max_concurrent,
            &l.cpu_s_per_day,
            &l.max_timeout_s,
            &l.max_memory_mb,
            &l.weight,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn revoke(client: &mut Object, id: &KeyId) -> Result<KeyRecord> {
    let sql = format!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, {NOW_S}) WHERE id = $1 \
         RETURNING {KEY_COLUMNS}"
    );
    let stmt = client.prepare_cached(&sql).await?;
    match client.query_opt(&stmt, &[&id.as_str()]).await? {
        Some(row) => Ok(key_row(&row)?.into_record()?),
        None => Err(StoreError::NotFound.into()),
    }
}

pub(super) async fn record_usage(
    client: &mut Object,
    batch_id: &str,
    deltas: &[UsageDelta],
) -> Result<Recorded> {
    usage::validate_batch_id(batch_id)?;
    let totals = usage::merge(deltas)?;
    let tx = client.transaction().await?;
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO usage_batches (batch_id, applied_at) VALUES ($1, {NOW_S}) \
             ON CONFLICT (batch_id) DO NOTHING"
        ))
        .await?;
    if tx.execute(&stmt, &[&batch_id]).await? == 0 {
        return Ok(Recorded::AlreadyApplied);
    }
    if !totals.is_empty() {
        // merge() checked that every figure fits an i64, and sorted the rows.
        let column = |f: fn(&UsageTotal) -> u64| -> Vec<i64> {
            totals.iter().map(|t| f(t) as i64).collect()
        };
        let key_ids: Vec<&str> = totals.iter().map(|t| t.key_id.as_str()).collect();
        let hours: Vec<i64> = totals.iter().map(|t| t.hour_start).collect();
        let outcomes: Vec<&str> = totals.iter().map(|t| t.outcome.as_str()).collect();
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO usage_hourly ({USAGE_COLUMNS}) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], \
                                      $5::bigint[], $6::bigint[], $7::bigint[]) \
                 ON CONFLICT (key_id, hour_start, outcome) DO UPDATE SET \
                 jobs = usage_hourly.jobs + excluded.jobs, \
                 cpu_us = usage_hourly.cpu_us + excluded.cpu_us, \
                 wall_us = usage_hourly.wall_us + excluded.wall_us, \
                 peak_memory_bytes = \
                     greatest(usage_hourly.peak_memory_bytes, excluded.peak_memory_bytes)"
            ))
            .await?;
        tx.execute(
            &stmt,
            &[
                &key_ids,
                &hours,
                &outcomes,
                &column(|t| t.jobs),
                &column(|t| t.cpu_us),
                &column(|t| t.wall_us),
                &column(|t| t.peak_memory_bytes),
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Recorded::Applied)
}

pub(super) async fn usage(client: &mut Object, filter: &UsageFilter) -> Result<Vec<UsageTotal>> {
    let sql = format!(
        "SELECT {USAGE_COLUMNS} FROM usage_hourly \
         WHERE hour_start >= $1 AND hour_start < $2 AND ($3::text IS NULL OR key_id = $3) \
         ORDER BY key_id, hour_start, outcome"
    );
    let stmt = client.prepare_cached(&sql).await?;
    let rows = client
        .query(
            &stmt,
            &[
                &filter.since_hour,
                &filter.until_hour.unwrap_or(i64::MAX),
                &filter.key_id.as_ref().map(KeyId::as_str),
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let row = UsageRow {
                key_id: get(row, 0)?,
                hour_start: get(row, 1)?,
                outcome: get(row, 2)?,
                jobs: get(row, 3)?,
                cpu_us: get(row, 4)?,
                wall_us: get(row, 5)?,
                peak_memory_bytes: get(row, 6)?,
            };
            Ok(row.into_total()?)
        })
        .collect()
}

pub(super) async fn create_snippet(client: &mut Object, snippet: &NewSnippet) -> Result<Snippet> {
    snippets::validate(snippet)?;
    let sql = format!(
        "INSERT INTO snippets ({SNIPPET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, {NOW_S}) \
         RETURNING created_at"
    );
    let stmt = client.prepare_cached(&sql).await?;
    for _ in 0..ID_ATTEMPTS {
        let id = SnippetId::random();
        let inserted = client
            .query_one(
                &stmt,
                &[
                    &id.as_str(),
                    &snippet.key_id.as_ref().map(KeyId::as_str),
                    &snippet.script,
                    &snippet.input,
                    &snippet.limits,
                ],
            )
            .await;
        match inserted {
            Ok(row) => {
                return Ok(Snippet {
                    id,
                    key_id: snippet.key_id.clone(),
                    script: snippet.script.clone(),
                    input: snippet.input.clone(),
                    limits: snippet.limits.clone(),
                    created_at: get(&row, 0)?,
                })
            }
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Internal("fresh random snippet ids kept colliding".into()).into())
}

pub(super) async fn get_snippet(client: &mut Object, id: &SnippetId) -> Result<Option<Snippet>> {
    let sql = format!("SELECT {SNIPPET_COLUMNS} FROM snippets WHERE id = $1");
    let stmt = client.prepare_cached(&sql).await?;
    let row = client.query_opt(&stmt, &[&id.as_str()]).await?;
    Ok(row
        .map(|r| snippet_row(&r))
        .transpose()?
        .map(SnippetRow::into_snippet)
        .transpose()?)
}

pub(super) async fn delete_snippet(
    client: &mut Object,
    id: &SnippetId,
    by: Option<&KeyId>,
) -> Result<SnippetDeletion> {
    let tx = client.transaction().await?;
    let stmt = tx
        .prepare_cached("SELECT key_id FROM snippets WHERE id = $1 FOR UPDATE")
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&id.as_str()]).await? else {
        return Ok(SnippetDeletion::NotFound);
    };
    let owner: Option<String> = get(&row, 0)?;
    if owner.as_deref() != by.map(KeyId::as_str) {
        return Ok(SnippetDeletion::NotOwner);
    }
    let stmt = tx
        .prepare_cached("DELETE FROM snippets WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&id.as_str()]).await?;
    tx.commit().await?;
    Ok(SnippetDeletion::Deleted)
}

pub(super) async fn lease_counter(
    client: &mut Object,
    key_id: &KeyId,
    counter: &str,
    window: Window,
    want: i64,
    cap: i64,
) -> Result<CounterGrant> {
    budgets::validate_counter(counter)?;
    budgets::validate_amounts(want, cap)?;
    let end = window.end()?;
    let tx = client.transaction().await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO budget_counters (key_id, counter, window_start, window_end, granted) \
             VALUES ($1, $2, $3, $4, 0) ON CONFLICT (key_id, counter, window_start) DO NOTHING",
        )
        .await?;
    tx.execute(&stmt, &[&key_id.as_str(), &counter, &window.start, &end])
        .await?;
    let stmt = tx
        .prepare_cached(
            "SELECT granted FROM budget_counters \
             WHERE key_id = $1 AND counter = $2 AND window_start = $3 FOR UPDATE",
        )
        .await?;
    let row = tx
        .query_one(&stmt, &[&key_id.as_str(), &counter, &window.start])
        .await?;
    let already: i64 = get(&row, 0)?;
    let granted = budgets::grant(want, cap, already);
    let window_total = already.saturating_add(granted);
    if granted > 0 {
        let stmt = tx
            .prepare_cached(
                "UPDATE budget_counters SET granted = $4 \
                 WHERE key_id = $1 AND counter = $2 AND window_start = $3",
            )
            .await?;
        tx.execute(
            &stmt,
            &[&key_id.as_str(), &counter, &window.start, &window_total],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(CounterGrant {
        granted,
        window_total,
    })
}

pub(super) async fn return_counter(
    client: &mut Object,
    key_id: &KeyId,
    counter: &str,
    window: Window,
    amount: i64,
) -> Result<()> {
    budgets::validate_counter(counter)?;
    budgets::validate_amounts(amount, 0)?;
    window.end()?;
    let stmt = client
        .prepare_cached(
            "UPDATE budget_counters SET granted = greatest(granted - $4, 0) \
             WHERE key_id = $1 AND counter = $2 AND window_start = $3",
        )
        .await?;
    client
        .execute(&stmt, &[&key_id.as_str(), &counter, &window.start, &amount])
        .await?;
    Ok(())
}

/// Serializes slot changes of one key until the transaction ends.
async fn lock_key_slots(tx: &Transaction<'_>, key_id: &KeyId) -> Result<()> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .await?;
    tx.execute(&stmt, &[&SLOT_LOCK_CLASS, &key_id.as_str()])
        .await?;
    Ok(())
}

pub(super) async fn acquire_slots(
    client: &mut Object,
    key_id: &KeyId,
    instance: &InstanceId,
    want: u32,
    max: u32,
    ttl: Duration,
) -> Result<u32> {
    let ttl_ms = budgets::ttl_ms(ttl)?;
    let tx = client.transaction().await?;
    lock_key_slots(&tx, key_id).await?;
    let stmt = tx
        .prepare_cached(&format!(
            "DELETE FROM slot_holds WHERE key_id = $1 AND expires_at_ms <= {NOW_MS}"
        ))
        .await?;
    tx.execute(&stmt, &[&key_id.as_str()]).await?;
    let stmt = tx
        .prepare_cached("SELECT coalesce(sum(held), 0)::bigint FROM slot_holds WHERE key_id = $1")
        .await?;
    let held: i64 = get(&tx.query_one(&stmt, &[&key_id.as_str()]).await?, 0)?;
    let granted = budgets::grant(i64::from(want), i64::from(max), held);
    if granted > 0 {
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO slot_holds (key_id, instance_id, held, expires_at_ms) \
                 VALUES ($1, $2, $3, {NOW_MS} + $4) \
                 ON CONFLICT (key_id, instance_id) DO UPDATE SET \
                 held = slot_holds.held + excluded.held, expires_at_ms = excluded.expires_at_ms"
            ))
            .await?;
        tx.execute(
            &stmt,
            &[&key_id.as_str(), &instance.as_str(), &granted, &ttl_ms],
        )
        .await?;
    } else {
        let stmt = tx
            .prepare_cached(&format!(
                "UPDATE slot_holds SET expires_at_ms = {NOW_MS} + $3 \
                 WHERE key_id = $1 AND instance_id = $2"
            ))
            .await?;
        tx.execute(&stmt, &[&key_id.as_str(), &instance.as_str(), &ttl_ms])
            .await?;
    }
    tx.commit().await?;
    Ok(rows::count_u32("slots granted", granted)?)
}

pub(super) async fn release_slots(
    client: &mut Object,
    key_id: &KeyId,
    instance: &InstanceId,
    n: u32,
) -> Result<()> {
    let tx = client.transaction().await?;
    lock_key_slots(&tx, key_id).await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE slot_holds SET held = greatest(held - $3, 0) \
             WHERE key_id = $1 AND instance_id = $2",
        )
        .await?;
    tx.execute(
        &stmt,
        &[&key_id.as_str(), &instance.as_str(), &i64::from(n)],
    )
    .await?;
    let stmt = tx
        .prepare_cached(
            "DELETE FROM slot_holds WHERE key_id = $1 AND instance_id = $2 AND held <= 0",
        )
        .await?;
    tx.execute(&stmt, &[&key_id.as_str(), &instance.as_str()])
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn heartbeat(
    client: &mut Object,
    instance: &InstanceId,
    ttl: Duration,
) -> Result<Vec<SlotHold>> {
    let ttl_ms = budgets::ttl_ms(ttl)?;
    let tx = client.transaction().await?;
    let stmt = tx
        .prepare_cached(&format!(
            "DELETE FROM slot_holds WHERE instance_id = $1 AND expires_at_ms <= {NOW_MS}"
        ))
        .await?;
    tx.execute(&stmt, &[&instance.as_str()]).await?;
    let stmt = tx
        .prepare_cached(&format!(
            "UPDATE slot_holds SET expires_at_ms = {NOW_MS} + $2 WHERE instance_id = $1 \
             RETURNING key_id, held"
        ))
        .await?;
    let rows = tx.query(&stmt, &[&instance.as_str(), &ttl_ms]).await?;
    let mut holds = rows
        .iter()
        .map(|row| {
            let key_id: String = get(row, 0)?;
            let held: i64 = get(row, 1)?;
            Ok(SlotHold {
                key_id: rows::key_id(&key_id)?,
                held: rows::count_u32("slots held", held)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    tx.commit().await?;
    holds.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    Ok(holds)
}

pub(super) async fn purge(client: &mut Object) -> Result<Purged> {
    let tx = client.transaction().await?;
    let usage_batches = tx
        .execute(
            &format!("DELETE FROM usage_batches WHERE applied_at < {NOW_S} - $1"),
            &[&(BATCH_RETENTION.as_secs() as i64)],
        )
        .await?;
    let counter_windows = tx
        .execute(
            &format!("DELETE FROM budget_counters WHERE window_end < {NOW_S} - $1"),
            &[&(COUNTER_GRACE.as_secs() as i64)],
        )
        .await?;
    let slot_holds = tx
        .execute(
            &format!("DELETE FROM slot_holds WHERE expires_at_ms <= {NOW_MS}"),
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(Purged {
        usage_batches,
        counter_windows,
        slot_holds,
    })
}
