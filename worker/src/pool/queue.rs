//! The queue of requests waiting for a worker, fair between callers: each
//! caller's requests wait in their own line, and the lines are served in
//! turn, `weight` requests of a caller per turn (weighted round robin). A
//! caller with a hundred requests queued delays another caller's one by at
//! most its own weight in jobs, not by a hundred.
//!
//! ```text
//!  ring:   [B] ──▶ [A] ──▶ [C] ──▶ (back to B)      one turn each, in order
//!  lines:   B: b1           A: a1 a2 … a100   C: c1 c2
//!  served:  b1, a1, c1, a2, c2, a3, a4, …
//! ```
//!
//! When the queue is full, the caller holding the most of it (per unit of
//! weight) gives up its newest request to make room, unless the newcomer's
//! own caller is that one: then the newcomer is refused. With one caller
//! this is the first-come-first-served queue it always was.

use std::collections::{HashMap, VecDeque};

/// Who a request is for, as far as the pool is concerned: an opaque id and
/// how many requests per turn its line gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller {
    pub id: u64,
    /// Requests served per turn, at least 1.
    pub weight: u32,
}

impl Caller {
    /// Everyone, when there are no callers to tell apart (no API keys).
    pub const ANONYMOUS: Caller = Caller { id: 0, weight: 1 };
}

/// One caller's line.
struct Line<T> {
    waiting: VecDeque<T>,
    weight: u32,
    /// Requests still to serve in this caller's current turn.
    turn_left: u32,
}

/// Waiting requests (`T`: whatever stands for one), fair between callers.
pub struct FairQueue<T> {
    lines: HashMap<u64, Line<T>>,
    /// Callers with requests waiting, the one whose turn it is first.
    ring: VecDeque<u64>,
    len: usize,
}

/// What became of a request the queue was asked to take.
pub enum Admission<T> {
    /// Queued.
    Queued,
    /// Queued, and to make room this request of the heaviest caller was
    /// taken out: it must be refused.
    Displaced(T),
    /// Not queued: the queue is full and the newcomer's caller holds the
    /// most of it.
    Refused(T),
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            lines: HashMap::new(),
            ring: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Queues `item` for `caller`, within `capacity` requests in all.
    pub fn admit(&mut self, caller: Caller, item: T, capacity: usize) -> Admission<T> {
        if self.len < capacity {
            self.push(caller, item);
            return Admission::Queued;
        }
        let own = self.load_of(caller.id, caller.weight, 1);
        match self.heaviest() {
            Some((heaviest, load)) if heaviest != caller.id && load > own => {
                match self.take_newest(heaviest) {
                    Some(displaced) => {
                        self.push(caller, item);
                        Admission::Displaced(displaced)
                    }
                    None => Admission::Refused(item),
                }
            }
            _ => Admission::Refused(item),
        }
    }

    fn push(&mut self, caller: Caller, item: T) {
        let weight = caller.weight.max(1);
        let line = self.lines.entry(caller.id).or_insert_with(|| Line {
            waiting: VecDeque::new(),
            weight,
            turn_left: weight,
        });
        line.weight = weight;
        if line.waiting.is_empty() {
            self.ring.push_back(caller.id);
        }
        line.waiting.push_back(item);
        self.len += 1;
    }

    /// The next request to serve: the head of the line whose turn it is.
    pub fn pop(&mut self) -> Option<T> {
        let id = *self.ring.front()?;
        let line = self.lines.get_mut(&id)?;
        let item = line.waiting.pop_front()?;
        self.len -= 1;
        line.turn_left = line.turn_left.saturating_sub(1);
        if line.waiting.is_empty() {
            self.ring.pop_front();
            self.lines.remove(&id);
        } else if line.turn_left == 0 {
            line.turn_left = line.weight;
            self.ring.rotate_left(1);
        }
        Some(item)
    }

    /// Puts back a request just popped that could not be served after all,
    /// at the head of its line, its turn as it was.
    pub fn unpop(&mut self, caller: Caller, item: T) {
        match self.lines.get_mut(&caller.id) {
            Some(line) => {
                line.waiting.push_front(item);
                self.len += 1;
                if self.ring.front() != Some(&caller.id) {
                    // Its turn had passed on: give it back.
                    self.ring.retain(|id| *id != caller.id);
                    self.ring.push_front(caller.id);
                    line.turn_left = 1;
                } else {
                    line.turn_left += 1;
                }
            }
            None => {
                self.push(caller, item);
                let id = self.ring.pop_back().expect("just pushed");
                self.ring.push_front(id);
                if let Some(line) = self.lines.get_mut(&id) {
                    line.turn_left = 1;
                }
            }
        }
    }

    /// Keeps only the requests for which `keep` holds (drops abandoned ones).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut emptied = Vec::new();
        for (id, line) in self.lines.iter_mut() {
            let before = line.waiting.len();
            line.waiting.retain(&mut keep);
            self.len -= before - line.waiting.len();
            if line.waiting.is_empty() {
                emptied.push(*id);
            }
        }
        for id in emptied {
            self.lines.remove(&id);
            self.ring.retain(|r| *r != id);
        }
    }

    /// How many requests `caller` has waiting.
    pub fn waiting_for(&self, caller: u64) -> usize {
        self.lines.get(&caller).map_or(0, |l| l.waiting.len())
    }

    /// Iterates over every waiting request, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.lines.values().flat_map(|l| l.waiting.iter())
    }

    /// Removes every waiting request.
    pub fn clear(&mut self) {
        self.lines.clear();
        self.ring.clear();
        self.len = 0;
    }

    /// A caller's share of the queue per unit of weight, with `extra` more
    /// requests, scaled so loads compare as integers.
    fn load_of(&self, id: u64, weight: u32, extra: usize) -> u64 {
        let waiting = self.waiting_for(id) + extra;
        (waiting as u64 * 1_000_000) / u64::from(weight.max(1))
    }

    /// The caller holding the most of the queue per unit of weight.
    fn heaviest(&self) -> Option<(u64, u64)> {
        self.lines
            .iter()
            .map(|(id, line)| (*id, self.load_of(*id, line.weight, 0)))
            .max_by_key(|(id, load)| (*load, std::cmp::Reverse(*id)))
    }

    fn take_newest(&mut self, id: u64) -> Option<T> {
        let line = self.lines.get_mut(&id)?;
        let item = line.waiting.pop_back()?;
        self.len -= 1;
        if line.waiting.is_empty() {
            self.lines.remove(&id);
            self.ring.retain(|r| *r != id);
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(id: u64) -> Caller {
        Caller { id, weight: 1 }
    }

    fn drain(queue: &mut FairQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    #[test]
    fn one_caller_is_first_come_first_served() {
        let mut queue = FairQueue::default();
        for item in ["a", "b", "c"] {
            assert!(matches!(
                queue.admit(Caller::ANONYMOUS, item, 10),
                Admission::Queued
            ));
        }
        assert_eq!(queue.len(), 3);
        assert_eq!(drain(&mut queue), ["a", "b", "c"]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn callers_are_served_in_turn_whatever_each_has_queued() {
        let mut queue = FairQueue::default();
        for item in ["a1", "a2", "a3", "a4"] {
            queue.admit(caller(1), item, 100);
        }
        queue.admit(caller(2), "b1", 100);
        queue.admit(caller(3), "c1", 100);
        queue.admit(caller(3), "c2", 100);
        assert_eq!(
            drain(&mut queue),
            ["a1", "b1", "c1", "a2", "c2", "a3", "a4"]
        );
    }

    #[test]
    fn a_weight_is_that_many_requests_per_turn() {
        let mut queue = FairQueue::default();
        let heavy = Caller { id: 1, weight: 3 };
        for item in ["h1", "h2", "h3", "h4", "h5"] {
            queue.admit(heavy, item, 100);
        }
        for item in ["l1", "l2"] {
            queue.admit(caller(2), item, 100);
        }
        assert_eq!(
            drain(&mut queue),
            ["h1", "h2", "h3", "l1", "h4", "h5", "l2"]
        );
    }

    #[test]
    fn a_full_queue_sheds_the_heaviest_callers_newest_request() {
        let mut queue = FairQueue::default();
        for item in ["a1", "a2", "a3"] {
            queue.admit(caller(1), item, 4);
        }
        queue.admit(caller(2), "b1", 4);
        // Full: a newcomer of the light caller displaces the heavy one's newest.
        match queue.admit(caller(2), "b2", 4) {
            Admission::Displaced(item) => assert_eq!(item, "a3"),
            _ => panic!("the heaviest caller's newest request makes room"),
        }
        // The heavy caller itself is refused when it is the heaviest.
        assert!(matches!(
            queue.admit(caller(1), "a4", 4),
            Admission::Refused("a4")
        ));
        // Equal shares: nobody is displaced for a newcomer that would be heavier.
        assert!(matches!(
            queue.admit(caller(2), "b3", 4),
            Admission::Refused("b3")
        ));
        assert_eq!(queue.len(), 4);
        assert_eq!(drain(&mut queue), ["a1", "b1", "a2", "b2"]);
    }

    #[test]
    fn a_request_put_back_keeps_its_place_and_its_turn() {
        let mut queue = FairQueue::default();
        queue.admit(caller(1), "a1", 10);
        queue.admit(caller(1), "a2", 10);
        queue.admit(caller(2), "b1", 10);
        let first = queue.pop().unwrap();
        assert_eq!(first, "a1");
        queue.unpop(caller(1), first);
        assert_eq!(drain(&mut queue), ["a1", "b1", "a2"]);

        // A line emptied by the pop comes back at the head.
        queue.admit(caller(1), "a1", 10);
        queue.admit(caller(2), "b1", 10);
        let first = queue.pop().unwrap();
        queue.unpop(caller(1), first);
        assert_eq!(drain(&mut queue), ["a1", "b1"]);
    }

    #[test]
    fn abandoned_requests_leave_their_line() {
        let mut queue = FairQueue::default();
        queue.admit(caller(1), "a1", 10);
        queue.admit(caller(2), "gone", 10);
        queue.admit(caller(1), "a2", 10);
        queue.retain(|item| *item != "gone");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.waiting_for(2), 0);
        assert_eq!(drain(&mut queue), ["a1", "a2"]);
    }
}
