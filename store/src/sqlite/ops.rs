//! Each store operation as SQLite statements, on the store thread's
//! connection. Writes run in IMMEDIATE transactions: the write lock is taken
//! at BEGIN, so every read-then-write below is atomic across processes.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::database::unix_now;
use super::error::{is_unique_violation, OpError};
use crate::budgets::{self, CounterGrant, InstanceId, Purged, SlotHold, Window, COUNTER_GRACE};
use crate::error::StoreError;
use crate::keys::{validate_name, KeyLimits, KeyRecord, LimitsPatch};
use crate::rows::{
    self, KeyRow, LimitColumns, SnippetRow, UsageRow, KEY_COLUMNS, SNIPPET_COLUMNS, USAGE_COLUMNS,
};
use crate::snippets::{self, NewSnippet, Snippet, SnippetDeletion, SnippetId};
use crate::token::{new_token, KeyId, Token};
use crate::usage::{self, Recorded, UsageDelta, UsageFilter, UsageTotal, BATCH_RETENTION};

type Result<T> = std::result::Result<T, OpError>;

/// Tries for a fresh random id before concluding something else is wrong.
const ID_ATTEMPTS: usize = 3;

fn now_s() -> i64 {
    unix_now().as_secs() as i64
}

fn now_ms() -> i64 {
    i64::try_from(unix_now().as_millis()).unwrap_or(i64::MAX)
}

fn immediate(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

pub(super) fn ping(conn: &mut Connection) -> Result<()> {
    conn.query_row("SELECT 1", [], |_| Ok(()))?;
    Ok(())
}

fn key_row(row: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: row.get(0)?,
        name: row.get(1)?,
        secret_hash: row.get(2)?,
        created_at: row.get(3)?,
        revoked_at: row.get(4)?,
        limits: LimitColumns {
            rate_per_s: row.get(5)?,
            burst: row.get(6)?,
            max_concurrent: row.get(7)?,
            cpu_s_per_day: row.get(8)?,
            max_timeout_s: row.get(9)?,
            max_memory_mb: row.get(10)?,
            weight: row.get(11)?,
        },
    })
}

fn select_key(conn: &Connection, id: &KeyId) -> Result<Option<KeyRecord>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1");
    let row = conn
        .prepare_cached(&sql)?
        .query_row([id.as_str()], key_row)
        .optional()?;
    Ok(row.map(KeyRow::into_record).transpose()?)
}

pub(super) fn create_key(
    conn: &mut Connection,
    name: &str,
    limits: &KeyLimits,
) -> Result<(KeyRecord, Token)> {
    validate_name(name)?;
    limits.validate()?;
    let l = LimitColumns::of(limits);
    let created_at = now_s();
    for _ in 0..ID_ATTEMPTS {
        let (id, token, secret_hash) = new_token();
        let inserted = conn.execute(
            &format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                id.as_str(),
                name,
                &secret_hash.as_bytes()[..],
                created_at,
                l.rate_per_s,
                l.burst,
                l.max_concurrent,
                l.cpu_s_per_day,
                l.max_timeout_s,
                l.max_memory_mb,
                l.weight
            ],
        );
        match inserted {
            Ok(_) => {
                let record = KeyRecord {
                    id,
                    name: name.to_owned(),
                    secret_hash,
                    created_at,
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

pub(super) fn list_keys(conn: &mut Connection) -> Result<Vec<KeyRecord>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([])?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        keys.push(key_row(row)?.into_record()?);
    }
    Ok(keys)
}

pub(super) fn get_key(conn: &mut Connection, id: &KeyId) -> Result<Option<KeyRecord>> {
    select_key(conn, id)
}

pub(super) fn set_limits(
    conn: &mut Connection,
    id: &KeyId,
    patch: &LimitsPatch,
) -> Result<KeyRecord> {
    let tx = immediate(conn)?;
    let Some(mut record) = select_key(&tx, id)? else {
        return Err(StoreError::NotFound.into());
    };
    record.limits = record.limits.patched(patch);
    record.limits.validate()?;
    let l = LimitColumns::of(&record.limits);
    tx.execute(
        "UPDATE api_keys SET rate_per_s = ?2, burst = ?3, max_concurrent = ?4, \
         cpu_s_per_day = ?5, max_timeout_s = ?6, max_memory_mb = ?7, weight = ?8 WHERE id = ?1",
        params![
            id.as_str(),
            l.rate_per_s,
            l.burst,
            l.max_concurrent,
            l.cpu_s_per_day,
            l.max_timeout_s,
            l.max_memory_mb,
            l.weight
        ],
    )?;
    tx.commit()?;
    Ok(record)
}

pub(super) fn revoke(conn: &mut Connection, id: &KeyId) -> Result<KeyRecord> {
    let sql = format!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1 \
         RETURNING {KEY_COLUMNS}"
    );
    let row = conn
        .prepare_cached(&sql)?
        .query_row(params![id.as_str(), now_s()], key_row)
        .optional()?;
    match row {
        Some(row) => Ok(row.into_record()?),
        None => Err(StoreError::NotFound.into()),
    }
}

pub(super) fn record_usage(
    conn: &mut Connection,
    batch_id: &str,
    deltas: &[UsageDelta],
) -> Result<Recorded> {
    usage::validate_batch_id(batch_id)?;
    let totals = usage::merge(deltas)?;
    let tx = immediate(conn)?;
    let fresh = tx.execute(
        "INSERT INTO usage_batches (batch_id, applied_at) VALUES (?1, ?2) \
         ON CONFLICT (batch_id) DO NOTHING",
        params![batch_id, now_s()],
    )?;
    if fresh == 0 {
        return Ok(Recorded::AlreadyApplied);
    }
    {
        let mut upsert = tx.prepare_cached(&format!(
            "INSERT INTO usage_hourly ({USAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (key_id, hour_start, outcome) DO UPDATE SET \
             jobs = jobs + excluded.jobs, cpu_us = cpu_us + excluded.cpu_us, \
             wall_us = wall_us + excluded.wall_us, \
             peak_memory_bytes = max(peak_memory_bytes, excluded.peak_memory_bytes)"
        ))?;
        for t in &totals {
            // merge() checked that every figure fits an i64.
            upsert.execute(params![
                t.key_id.as_str(),
                t.hour_start,
                t.outcome,
                t.jobs as i64,
                t.cpu_us as i64,
                t.wall_us as i64,
                t.peak_memory_bytes as i64
            ])?;
        }
    }
    tx.commit()?;
    Ok(Recorded::Applied)
}

pub(super) fn usage(conn: &mut Connection, filter: &UsageFilter) -> Result<Vec<UsageTotal>> {
    let sql = format!(
        "SELECT {USAGE_COLUMNS} FROM usage_hourly \
         WHERE hour_start >= ?1 AND hour_start < ?2 AND (?3 IS NULL OR key_id = ?3) \
         ORDER BY key_id, hour_start, outcome"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![
        filter.since_hour,
        filter.until_hour.unwrap_or(i64::MAX),
        filter.key_id.as_ref().map(KeyId::as_str)
    ])?;
    let mut totals = Vec::new();
    while let Some(row) = rows.next()? {
        let row = UsageRow {
            key_id: row.get(0)?,
            hour_start: row.get(1)?,
            outcome: row.get(2)?,
            jobs: row.get(3)?,
            cpu_us: row.get(4)?,
            wall_us: row.get(5)?,
            peak_memory_bytes: row.get(6)?,
        };
        totals.push(row.into_total()?);
    }
    Ok(totals)
}

fn snippet_row(row: &Row<'_>) -> rusqlite::Result<SnippetRow> {
    Ok(SnippetRow {
        id: row.get(0)?,
        key_id: row.get(1)?,
        script: row.get(2)?,
        input: row.get(3)?,
        limits: row.get(4)?,
        created_at: row.get(5)?,
    })
}

pub(super) fn create_snippet(conn: &mut Connection, snippet: &NewSnippet) -> Result<Snippet> {
    snippets::validate(snippet)?;
    let created_at = now_s();
    for _ in 0..ID_ATTEMPTS {
        let id = SnippetId::random();
        let inserted = conn.execute(
            &format!("INSERT INTO snippets ({SNIPPET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                id.as_str(),
                snippet.key_id.as_ref().map(KeyId::as_str),
                snippet.script,
                snippet.input,
                snippet.limits,
                created_at
            ],
        );
        match inserted {
            Ok(_) => {
                return Ok(Snippet {
                    id,
                    key_id: snippet.key_id.clone(),
                    script: snippet.script.clone(),
                    input: snippet.input.clone(),
                    limits: snippet.limits.clone(),
                    created_at,
                })
            }
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Internal("fresh random snippet ids kept colliding".into()).into())
}

pub(super) fn get_snippet(conn: &mut Connection, id: &SnippetId) -> Result<Option<Snippet>> {
    let sql = format!("SELECT {SNIPPET_COLUMNS} FROM snippets WHERE id = ?1");
    let row = conn
        .prepare_cached(&sql)?
        .query_row([id.as_str()], snippet_row)
        .optional()?;
    Ok(row.map(SnippetRow::into_snippet).transpose()?)
}

pub(super) fn delete_snippet(
    conn: &mut Connection,
    id: &SnippetId,
    by: Option<&KeyId>,
) -> Result<SnippetDeletion> {
    let tx = immediate(conn)?;
    let owner: Option<Option<String>> = tx
        .query_row(
            "SELECT key_id FROM snippets WHERE id = ?1",
            [id.as_str()],
            |row| row.get(0),
        )
        .optional()?;
    let Some(owner) = owner else {
        return Ok(SnippetDeletion::NotFound);
    };
    if owner.as_deref() != by.map(KeyId::as_str) {
        return Ok(SnippetDeletion::NotOwner);
    }
    tx.execute("DELETE FROM snippets WHERE id = ?1", [id.as_str()])?;
    tx.commit()?;
    Ok(SnippetDeletion::Deleted)
}

pub(super) fn lease_counter(
    conn: &mut Connection,
    key_id: &KeyId,
    counter: &str,
    window: Window,
    want: i64,
    cap: i64,
) -> Result<CounterGrant> {
    budgets::validate_counter(counter)?;
    budgets::validate_amounts(want, cap)?;
    let end = window.end()?;
    let tx = immediate(conn)?;
    let already: i64 = tx
        .query_row(
            "SELECT granted FROM budget_counters \
             WHERE key_id = ?1 AND counter = ?2 AND window_start = ?3",
            params![key_id.as_str(), counter, window.start],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let granted = budgets::grant(want, cap, already);
    let window_total = already.saturating_add(granted);
    tx.execute(
        "INSERT INTO budget_counters (key_id, counter, window_start, window_end, granted) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (key_id, counter, window_start) DO UPDATE SET granted = excluded.granted",
        params![key_id.as_str(), counter, window.start, end, window_total],
    )?;
    tx.commit()?;
    Ok(CounterGrant {
        granted,
        window_total,
    })
}

pub(super) fn return_counter(
    conn: &mut Connection,
    key_id: &KeyId,
    counter: &str,
    window: Window,
    amount: i64,
) -> Result<()> {
    budgets::validate_counter(counter)?;
    budgets::validate_amounts(amount, 0)?;
    window.end()?;
    conn.execute(
        "UPDATE budget_counters SET granted = max(granted - ?4, 0) \
         WHERE key_id = ?1 AND counter = ?2 AND window_start = ?3",
        params![key_id.as_str(), counter, window.start, amount],
    )?;
    Ok(())
}

pub(super) fn acquire_slots(
    conn: &mut Connection,
    key_id: &KeyId,
    instance: &InstanceId,
    want: u32,
    max: u32,
    ttl: Duration,
) -> Result<u32> {
    let ttl_ms = budgets::ttl_ms(ttl)?;
    let now = now_ms();
    let tx = immediate(conn)?;
    tx.execute(
        "DELETE FROM slot_holds WHERE key_id = ?1 AND expires_at_ms <= ?2",
        params![key_id.as_str(), now],
    )?;
    let held: i64 = tx.query_row(
        "SELECT coalesce(sum(held), 0) FROM slot_holds WHERE key_id = ?1",
        [key_id.as_str()],
        |row| row.get(0),
    )?;
    let granted = budgets::grant(i64::from(want), i64::from(max), held);
    let expires = now.saturating_add(ttl_ms);
    if granted > 0 {
        tx.execute(
            "INSERT INTO slot_holds (key_id, instance_id, held, expires_at_ms) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key_id, instance_id) DO UPDATE SET \
             held = held + excluded.held, expires_at_ms = excluded.expires_at_ms",
            params![key_id.as_str(), instance.as_str(), granted, expires],
        )?;
    } else {
        tx.execute(
            "UPDATE slot_holds SET expires_at_ms = ?3 WHERE key_id = ?1 AND instance_id = ?2",
            params![key_id.as_str(), instance.as_str(), expires],
        )?;
    }
    tx.commit()?;
    Ok(rows::count_u32("slots granted", granted)?)
}

pub(super) fn release_slots(
    conn: &mut Connection,
    key_id: &KeyId,
    instance: &InstanceId,
    n: u32,
) -> Result<()> {
    let tx = immediate(conn)?;
    tx.execute(
        "UPDATE slot_holds SET held = max(held - ?3, 0) WHERE key_id = ?1 AND instance_id = ?2",
        params![key_id.as_str(), instance.as_str(), n],
    )?;
    tx.execute(
        "DELETE FROM slot_holds WHERE key_id = ?1 AND instance_id = ?2 AND held <= 0",
        params![key_id.as_str(), instance.as_str()],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn heartbeat(
    conn: &mut Connection,
    instance: &InstanceId,
    ttl: Duration,
) -> Result<Vec<SlotHold>> {
    let ttl_ms = budgets::ttl_ms(ttl)?;
    let now = now_ms();
    let tx = immediate(conn)?;
    tx.execute(
        "DELETE FROM slot_holds WHERE instance_id = ?1 AND expires_at_ms <= ?2",
        params![instance.as_str(), now],
    )?;
    let mut holds = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE slot_holds SET expires_at_ms = ?2 WHERE instance_id = ?1 \
             RETURNING key_id, held",
        )?;
        let mut rows = stmt.query(params![instance.as_str(), now.saturating_add(ttl_ms)])?;
        while let Some(row) = rows.next()? {
            let key_id: String = row.get(0)?;
            let held: i64 = row.get(1)?;
            holds.push(SlotHold {
                key_id: rows::key_id(&key_id)?,
                held: rows::count_u32("slots held", held)?,
            });
        }
    }
    tx.commit()?;
    holds.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    Ok(holds)
}

pub(super) fn purge(conn: &mut Connection) -> Result<Purged> {
    let now = unix_now();
    let tx = immediate(conn)?;
    let usage_batches = tx.execute(
        "DELETE FROM usage_batches WHERE applied_at < ?1",
        [now.saturating_sub(BATCH_RETENTION).as_secs() as i64],
    )?;
    let counter_windows = tx.execute(
        "DELETE FROM budget_counters WHERE window_end < ?1",
        [now.saturating_sub(COUNTER_GRACE).as_secs() as i64],
    )?;
    let slot_holds = tx.execute(
        "DELETE FROM slot_holds WHERE expires_at_ms <= ?1",
        [i64::try_from(now.as_millis()).unwrap_or(i64::MAX)],
    )?;
    tx.commit()?;
    Ok(Purged {
        usage_batches: usage_batches as u64,
        counter_windows: counter_windows as u64,
        slot_holds: slot_holds as u64,
    })
}
