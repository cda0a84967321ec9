//! A job slot of a key, counted on this instance and, in a fleet, held in
//! the shared store: taken before a job starts, given back when it ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::fleet::Fleet;
use super::keys::KeyEntry;

/// A job slot of a key, held while its job runs; given back on drop (to
/// the fleet too, when the fleet's store granted it).
pub struct JobPermit {
    entry: Arc<KeyEntry>,
    fleet: Option<Arc<Fleet>>,
}

impl JobPermit {
    /// Takes one of the key's job slots, if it has one free here (`max`:
    /// `None` when the fleet already granted one).
    pub fn take(
        entry: &Arc<KeyEntry>,
        max: Option<u32>,
        fleet: Option<Arc<Fleet>>,
    ) -> Option<JobPermit> {
        let slots = &entry.jobs_in_flight;
        let mut current = slots.load(Ordering::SeqCst);
        loop {
            if max.is_some_and(|max| current >= max) {
                return None;
            }
            match slots.compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    return Some(JobPermit {
                        entry: entry.clone(),
                        fleet,
                    })
                }
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for JobPermit {
    fn drop(&mut self) {
        self.entry.jobs_in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(fleet) = &self.fleet {
            fleet.give_slot(&self.entry.id());
        }
    }
}
