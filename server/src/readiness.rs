//! When the server is ready for traffic (`GET /readyz`).
//!
//! The server only starts serving after the sandbox self-check passed (start-up
//! exits otherwise), so readiness is about the pool: ready once a warm worker
//! has become ready (at once with a pool size of 0, where every request spawns
//! its own), and no longer ready while shutting down, or while workers keep
//! failing to start and none is left. Under full load every worker can be
//! busy: that is saturation, answered by the queue and 503 `overloaded`, not
//! unreadiness, so readiness does not flap with load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyexec_worker::PoolStatus;

/// Failed spawns in a row, with no worker ready, after which the pool is
/// reported broken rather than still warming up.
const BROKEN_AFTER_FAILURES: u32 = 3;

#[derive(Default)]
pub struct Readiness {
    warmed: AtomicBool,
    last_spawn_error: Mutex<Option<String>>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    pub fn worker_ready(&self) {
        self.warmed.store(true, Ordering::Relaxed);
    }

    pub fn spawn_failed(&self, error: &str) {
        *self
            .last_spawn_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }

    /// `Ok` when ready, else why not. `draining`: a shutdown has begun;
    /// `sandbox`: whether the sandbox can make workers now (fork mode: a
    /// live zygote).
    pub fn check(
        &self,
        pool: &PoolStatus,
        draining: bool,
        sandbox: Result<(), String>,
    ) -> Result<(), String> {
        if draining || pool.closed {
            return Err("shutting down".into());
        }
        sandbox?;
        if pool.ready == 0 && pool.spawn_failures_in_a_row >= BROKEN_AFTER_FAILURES {
            let last = self
                .last_spawn_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(format!(
                "workers keep failing to start ({} in a row); last error: {}",
                pool.spawn_failures_in_a_row,
                last.unwrap_or_else(|| "unknown".into())
            ));
        }
        if pool.target > 0 && !self.warmed.load(Ordering::Relaxed) {
            return Err(format!(
                "warming up: no worker ready yet ({} spawning)",
                pool.spawning
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_that_cannot_make_workers_is_unready() {
        let r = Readiness::new();
        r.worker_ready();
        let why = r
            .check(&status(2, 2, 0), false, Err("no live zygote".into()))
            .unwrap_err();
        assert_eq!(why, "no live zygote");
    }

    fn status(target: usize, ready: usize, failures: u32) -> PoolStatus {
        PoolStatus {
            target,
            ready,
            spawning: target - ready,
            busy: 0,
            waiting: 0,
            spawn_failures_in_a_row: failures,
            closed: false,
        }
    }

    #[test]
    fn ready_once_a_worker_was_ready() {
        let r = Readiness::new();
        assert!(r
            .check(&status(2, 0, 0), false, Ok(()))
            .unwrap_err()
            .contains("warming up"));
        r.worker_ready();
        assert!(r.check(&status(2, 1, 0), false, Ok(())).is_ok());
        // Every worker busy: saturated, still ready.
        assert!(r.check(&status(2, 0, 0), false, Ok(())).is_ok());
    }

    #[test]
    fn a_pool_of_zero_is_ready_at_once() {
        assert!(Readiness::new()
            .check(&status(0, 0, 0), false, Ok(()))
            .is_ok());
    }

    #[test]
    fn failing_spawns_make_it_unready() {
        let r = Readiness::new();
        r.worker_ready();
        r.spawn_failed("nsjail exited 255");
        assert!(r.check(&status(2, 0, 2), false, Ok(())).is_ok());
        let why = r.check(&status(2, 0, 3), false, Ok(())).unwrap_err();
        assert!(why.contains("nsjail exited 255"), "{why}");
        assert!(r.check(&status(0, 0, 3), false, Ok(())).is_err());
    }

    #[test]
    fn draining_is_unready() {
        let r = Readiness::new();
        r.worker_ready();
        assert!(r.check(&status(2, 2, 0), false, Ok(())).is_ok());
        assert_eq!(
            r.check(&status(2, 2, 0), true, Ok(())).unwrap_err(),
            "shutting down"
        );
    }
}
