//! Keeping one live zygote current: starting it, replacing one that died or
//! whose children keep failing, recycling one that is due (the successor is
//! ready before the old one leaves), and waiting for a live one to fork from.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::zygote::{Zygote, ZygoteStart};
use super::{lock, Inner};
use crate::error::{ForkError, ZygoteError};

/// How often the supervisor looks at the current zygote's age.
const SUPERVISOR_TICK: Duration = Duration::from_secs(1);
/// Back-off between attempts to start a zygote that keeps failing.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// A live zygote whose children failed this many times in a row (stopped,
/// wedged, out of memory in its own cgroup) is replaced as if it had died:
/// otherwise the pool would ask it for workers forever.
const FAILED_SPAWNS_BEFORE_REPLACEMENT: u32 = 3;

impl Inner {
    pub(super) async fn start_zygote(&self, reason: &str) -> Result<Arc<Zygote>, Arc<ZygoteError>> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let started = std::time::Instant::now();
        let from = ZygoteStart {
            nsjail: &self.nsjail,
            launcher: &self.launcher,
            cgroups: &self.cgroups,
            cgroup_limits: self.zygote_limits.clone(),
            timeout: self.nsjail.config().spawn_timeout,
            pages: self.pages,
            endings: self.endings.clone(),
        };
        match Zygote::start(generation, from).await {
            Ok(zygote) => {
                *lock(&self.last_failure) = None;
                self.observer
                    .zygote_started(generation, reason, started.elapsed());
                tracing::info!(
                    zygote = generation,
                    reason,
                    start_ms = started.elapsed().as_secs_f64() * 1e3,
                    "zygote ready"
                );
                Ok(zygote)
            }
            Err(error) => {
                let error = Arc::new(error);
                *lock(&self.last_failure) = Some(error.clone());
                self.observer.zygote_failed(generation, &error);
                tracing::warn!(zygote = generation, error = %error, "a zygote failed to start");
                Err(error)
            }
        }
    }

    /// Counts a child of `zygote` that failed, and wakes the supervisor once
    /// the zygote is due for replacement.
    pub(super) fn count_failed_spawn(&self, zygote: &Zygote) {
        if zygote.spawn_failed() >= FAILED_SPAWNS_BEFORE_REPLACEMENT {
            self.nudge.notify_one();
        }
    }

    fn due_for_recycling(&self, zygote: &Zygote) -> bool {
        zygote.forks() >= self.recycling.max_forks || zygote.age() >= self.recycling.max_age
    }

    /// Waits up to the spawn timeout for a live zygote.
    pub(super) async fn live_zygote(&self) -> Result<Arc<Zygote>, ForkError> {
        let mut current = self.current.subscribe();
        let timeout = self.nsjail.config().spawn_timeout;
        let found = tokio::time::timeout(
            timeout,
            current.wait_for(|z| z.as_ref().is_some_and(|z| z.is_alive())),
        )
        .await;
        match found {
            Ok(Ok(zygote)) => Ok(zygote.clone().expect("wait_for saw a live zygote")),
            Ok(Err(_)) => Err(ForkError::Closing),
            Err(_) => Err(ForkError::NoZygote {
                waited: timeout,
                last_failure: lock(&self.last_failure).clone(),
            }),
        }
    }
}

/// Keeps a live zygote current: replaces one that died, recycles one that
/// is due, each time starting the successor before the old one leaves.
pub(super) async fn supervise(inner: Arc<Inner>) {
    loop {
        let current = inner.current.borrow().clone();
        let reason = match &current {
            Some(zygote) if !zygote.is_alive() => {
                inner.observer.zygote_died(zygote.generation());
                tracing::warn!(
                    zygote = zygote.generation(),
                    "the zygote died; replacing it"
                );
                // Nothing can be forked from it any more.
                inner.current.send_replace(None);
                Some("died")
            }
            None => Some("died"),
            Some(zygote) if zygote.failed_spawns_in_a_row() >= FAILED_SPAWNS_BEFORE_REPLACEMENT => {
                tracing::warn!(
                    zygote = zygote.generation(),
                    failed_spawns = zygote.failed_spawns_in_a_row(),
                    "the zygote's children keep failing; replacing it"
                );
                Some("failing")
            }
            Some(zygote) if inner.due_for_recycling(zygote) => Some("recycled"),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            match inner.start_zygote(reason).await {
                // The old one leaves the sandbox here and ends once the
                // last worker it forked has been reaped.
                Ok(fresh) => drop(inner.current.send_replace(Some(fresh))),
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(RESTART_BACKOFF) => {}
                        _ = inner.stop.cancelled() => return,
                    }
                }
            }
            continue;
        }
        let died = async {
            match &current {
                Some(zygote) => zygote.died().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = died => {}
            _ = inner.nudge.notified() => {}
            _ = tokio::time::sleep(SUPERVISOR_TICK) => {}
            _ = inner.stop.cancelled() => return,
        }
    }
}
