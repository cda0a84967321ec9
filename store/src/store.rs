//! The one interface of the store, implemented by each backend.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::budgets::{CounterGrant, InstanceId, Purged, SlotHold, Window};
use crate::error::StoreError;
use crate::keys::{KeyLimits, KeyRecord, LimitsPatch};
use crate::snippets::{NewSnippet, Snippet, SnippetDeletion, SnippetId};
use crate::token::{KeyId, Token};
use crate::usage::{Recorded, UsageDelta, UsageFilter, UsageTotal};

/// Keys, usage, snippets and fleet budgets, in one database.
///
/// Every operation is one transaction with a deadline (`op_timeout`): it
/// either happens entirely or not at all, and it answers within the deadline
/// (`StoreError::Unavailable` when the database is slow or gone). Any
/// operation may also fail with `Unavailable`, `Corrupt` (the database
/// answered what this store never writes) or `Internal`; each method lists
/// only the errors particular to it.
///
/// **Cancel safety.** Dropping a call's future never leaves half an
/// operation, but the operation may still complete after the drop (or after
/// a deadline the caller saw pass): the caller can't tell whether it
/// happened. Each method says what that means for it.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The backend and where it is, for logs (never a password).
    fn describe(&self) -> String;

    /// Whether the database answers and, for the embedded one, its file is
    /// still in place. Cancel-safe (reads nothing).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes a key; returns it and its token, the only time the token exists
    /// (only its hash is stored). `Invalid` for a bad name or limits.
    /// If dropped, a key may have been made whose token is lost: revoke it.
    async fn create_key(
        &self,
        name: &str,
        limits: &KeyLimits,
    ) -> Result<(KeyRecord, Token), StoreError>;

    /// Every key, revoked ones included, oldest first. Cancel-safe.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// One key, revoked or not; `None` if there is no such key. Cancel-safe.
    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Changes some of a key's limits atomically (a revoked key's too) and
    /// returns the key as it now is. `NotFound`; `Invalid` if the resulting
    /// limits are. Safe to repeat.
    async fn set_limits(&self, id: &KeyId, patch: &LimitsPatch) -> Result<KeyRecord, StoreError>;

    /// Revokes a key for good; revoking it again keeps the first time.
    /// Returns the key as it now is. `NotFound`. Safe to repeat.
    async fn revoke(&self, id: &KeyId) -> Result<KeyRecord, StoreError>;

    /// Adds a batch of usage to the hourly totals, in one transaction, once
    /// per `batch_id`: a batch retried after an error (even one whose commit
    /// went through but whose answer was lost) is not counted twice, as long
    /// as it is retried within [`BATCH_RETENTION`](crate::BATCH_RETENTION).
    /// `Invalid` for a bad batch id or delta (then nothing is added).
    /// If dropped, retry with the same id.
    async fn record_usage(
        &self,
        batch_id: &str,
        deltas: &[UsageDelta],
    ) -> Result<Recorded, StoreError>;

    /// Hourly totals matching `filter`, ordered by key, hour and outcome.
    /// Cancel-safe.
    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageTotal>, StoreError>;

    /// Saves a snippet under a new random id. `Invalid` for NUL characters.
    /// If dropped, a snippet may have been saved that nobody knows the id of.
    async fn create_snippet(&self, snippet: &NewSnippet) -> Result<Snippet, StoreError>;

    /// A snippet, or `None`. Cancel-safe.
    async fn get_snippet(&self, id: &SnippetId) -> Result<Option<Snippet>, StoreError>;

    /// Deletes a snippet if `by` owns it: the key that saved it, or `None`
    /// for a snippet saved without a key. Safe to repeat (then `NotFound`).
    async fn delete_snippet(
        &self,
        id: &SnippetId,
        by: Option<&KeyId>,
    ) -> Result<SnippetDeletion, StoreError>;

    /// Leases up to `want` units of a key's `counter` in `window`, atomically
    /// across every instance: grants `min(want, cap - already granted)`, at
    /// least 0. `cap` may differ between calls (a changed limit); it applies
    /// to what is granted from then on. `Invalid` for a bad counter name,
    /// window, or a negative `want`/`cap`. If dropped, the grant may be lost
    /// to the caller: the window then admits less, never more.
    async fn lease_counter(
        &self,
        key_id: &KeyId,
        counter: &str,
        window: Window,
        want: i64,
        cap: i64,
    ) -> Result<CounterGrant, StoreError>;

    /// Gives back `amount` leased units that were not used (the window's
    /// total never goes below 0; a purged or unknown window is left alone).
    /// `Invalid` for a negative amount. Not safe to repeat: a repeated
    /// return admits more than was used.
    async fn return_counter(
        &self,
        key_id: &KeyId,
        counter: &str,
        window: Window,
        amount: i64,
    ) -> Result<(), StoreError>;

    /// Takes up to `want` of a key's concurrency slots for `instance`, so
    /// that the live holds of all instances stay at or below `max`, and
    /// (re)sets this instance's hold on the key to expire after `ttl`.
    /// Returns how many were granted (0 when none are free). Holds that have
    /// expired are deleted first. `Invalid` for a ttl out of range. If
    /// dropped, the grant may exist unknown to the caller: [`Store::heartbeat`]
    /// lists what the instance holds.
    async fn acquire_slots(
        &self,
        key_id: &KeyId,
        instance: &InstanceId,
        want: u32,
        max: u32,
        ttl: Duration,
    ) -> Result<u32, StoreError>;

    /// Gives back `n` slots (the hold never goes below 0). Not safe to
    /// repeat.
    async fn release_slots(
        &self,
        key_id: &KeyId,
        instance: &InstanceId,
        n: u32,
    ) -> Result<(), StoreError>;

    /// Pushes back the expiry of every live hold of `instance` to `ttl` from
    /// now, and returns those holds. A hold missing from the answer has
    /// lapsed (the instance went longer than its ttl without a heartbeat) or
    /// was never granted: the instance holds nothing there and must acquire
    /// again. `Invalid` for a ttl out of range. Safe to repeat.
    async fn heartbeat(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<Vec<SlotHold>, StoreError>;

    /// Deletes what is no longer needed: usage batch ids older than
    /// [`BATCH_RETENTION`](crate::BATCH_RETENTION), counter windows
    /// that ended more than [`COUNTER_GRACE`](crate::COUNTER_GRACE)
    /// ago, expired slot holds. Run it every few minutes from one task per
    /// instance (concurrent purges are harmless). Safe to repeat.
    async fn purge(&self) -> Result<Purged, StoreError>;
}
