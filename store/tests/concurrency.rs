//! Fleet budgets and usage under concurrency: many tasks spread over two
//! stores on one database (two servers of a fleet; for SQLite, two
//! connections to one file, as two processes would have) never get more
//! than a cap, usage sums stay exact with retried batches, and the slots
//! of an instance that stops heart-beating lapse.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyexec_store::{InstanceId, KeyId, Recorded, Store, UsageDelta, UsageFilter, Window};

use common::{on_each_backend, scaled, Fixture};

const TASKS: usize = 16;

/// Small, varied numbers without a dependency: a xorshift per task.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

async fn two_stores(fixture: &Fixture) -> [Arc<dyn Store>; 2] {
    [fixture.store.clone(), fixture.reopen().await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_counters_never_exceed_the_cap() {
    on_each_backend(|fixture| async move {
        let stores = two_stores(&fixture).await;
        let key = KeyId::parse("leasekey0000").unwrap();
        let window = Window {
            start: 1_900_000_000,
            len_s: 10,
        };
        let cap = 300;
        let granted = Arc::new(AtomicI64::new(0));
        let returned = Arc::new(AtomicI64::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = stores[t % 2].clone();
                let (key, granted, returned) = (key.clone(), granted.clone(), returned.clone());
                tokio::spawn(async move {
                    let mut dice = Dice(0x9e37_79b9 + t as u64);
                    let mut dry = 0;
                    while dry < 3 {
                        let want = 1 + dice.roll(6) as i64;
                        let grant = store
                            .lease_counter(&key, "rate", window, want, cap)
                            .await
                            .unwrap();
                        assert!(grant.granted <= want && grant.granted >= 0);
                        assert!(grant.window_total <= cap, "{grant:?}");
                        granted.fetch_add(grant.granted, Ordering::SeqCst);
                        if grant.granted == 0 {
                            dry += 1;
                        } else if dice.roll(4) == 0 {
                            // Give some back, as an instance does with what
                            // it did not use.
                            let back = dice.roll(grant.granted as u64 + 1) as i64;
                            store
                                .return_counter(&key, "rate", window, back)
                                .await
                                .unwrap();
                            returned.fetch_add(back, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let total = stores[0]
            .lease_counter(&key, "rate", window, 0, cap)
            .await
            .unwrap()
            .window_total;
        let (granted, returned) = (
            granted.load(Ordering::SeqCst),
            returned.load(Ordering::SeqCst),
        );
        eprintln!(
            "{}: granted {granted}, returned {returned}, held {total}",
            fixture.backend()
        );
        assert_eq!(
            total, cap,
            "the window ends full (every task drew until dry)"
        );
        assert_eq!(granted - returned, total, "every unit accounted for");
        assert!(returned > 0, "returns were exercised");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slots_never_exceed_the_max() {
    on_each_backend(|fixture| async move {
        let stores = two_stores(&fixture).await;
        let key = KeyId::parse("slotkeyconc0").unwrap();
        let max = 5u32;
        let ttl = Duration::from_secs(60);
        // Slots in use as the tasks see them: raised after a grant, lowered
        // before a release, so never above what the store has granted.
        let in_use = Arc::new(AtomicI64::new(0));
        let peak = Arc::new(AtomicI64::new(0));
        // Grants smaller than asked: the max was reached, so the check above
        // was made under contention.
        let short = Arc::new(AtomicI64::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = stores[t % 2].clone();
                let instance = InstanceId::parse(&format!("instance-{}", t % 4)).unwrap();
                let (key, in_use, peak, short) =
                    (key.clone(), in_use.clone(), peak.clone(), short.clone());
                tokio::spawn(async move {
                    let mut dice = Dice(0x51ed_270b + t as u64);
                    for _ in 0..15 {
                        let want = 1 + dice.roll(3) as u32;
                        let got = store
                            .acquire_slots(&key, &instance, want, max, ttl)
                            .await
                            .unwrap();
                        assert!(got <= want);
                        if got < want {
                            short.fetch_add(1, Ordering::SeqCst);
                        }
                        let now =
                            in_use.fetch_add(i64::from(got), Ordering::SeqCst) + i64::from(got);
                        assert!(now <= i64::from(max), "{now} slots in use, max {max}");
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5 + dice.roll(20))).await;
                        in_use.fetch_sub(i64::from(got), Ordering::SeqCst);
                        store.release_slots(&key, &instance, got).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let (peak, short) = (peak.load(Ordering::SeqCst), short.load(Ordering::SeqCst));
        eprintln!(
            "{}: peak {peak} of {max}, {short} grants short of the ask",
            fixture.backend()
        );
        assert!(short > 0, "the slots were contended");
        for i in 0..4 {
            let instance = InstanceId::parse(&format!("instance-{i}")).unwrap();
            assert_eq!(
                stores[0].heartbeat(&instance, ttl).await.unwrap(),
                [],
                "all released"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_from_many_writers_sums_exactly_and_retries_count_once() {
    on_each_backend(|fixture| async move {
        let stores = two_stores(&fixture).await;
        let keys: Vec<KeyId> = ["usageconc000", "usageconc001", "usageconc002"]
            .iter()
            .map(|k| KeyId::parse(k).unwrap())
            .collect();
        let outcomes = ["ok", "timeout", "script_exception"];
        let hour = 3600 * 480_000;
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = stores[t % 2].clone();
                let keys = keys.clone();
                tokio::spawn(async move {
                    let mut dice = Dice(0x2545_f491 + t as u64);
                    let mut sent = Vec::new();
                    for b in 0..10 {
                        let deltas: Vec<UsageDelta> = (0..1 + dice.roll(8))
                            .map(|_| UsageDelta {
                                key_id: keys[dice.roll(3) as usize].clone(),
                                hour_start: hour + 3600 * dice.roll(2) as i64,
                                outcome: outcomes[dice.roll(3) as usize].to_string(),
                                jobs: 1 + dice.roll(3),
                                cpu_us: dice.roll(1 << 40) + (1 << 53),
                                wall_us: dice.roll(1 << 40),
                                peak_memory_bytes: dice.roll(1 << 30),
                            })
                            .collect();
                        let id = format!("task{t}-batch{b}");
                        assert_eq!(
                            store.record_usage(&id, &deltas).await.unwrap(),
                            Recorded::Applied
                        );
                        // The retry of a batch whose answer was lost.
                        assert_eq!(
                            store.record_usage(&id, &deltas).await.unwrap(),
                            Recorded::AlreadyApplied
                        );
                        sent.extend(deltas);
                    }
                    sent
                })
            })
            .collect();
        let mut expected = std::collections::BTreeMap::<(String, i64, String), [u64; 4]>::new();
        for task in tasks {
            for d in task.await.unwrap() {
                let e = expected
                    .entry((d.key_id.to_string(), d.hour_start, d.outcome))
                    .or_default();
                e[0] += d.jobs;
                e[1] += d.cpu_us;
                e[2] += d.wall_us;
                e[3] = e[3].max(d.peak_memory_bytes);
            }
        }
        let totals = stores[1]
            .usage(&UsageFilter {
                key_id: None,
                since_hour: hour,
                until_hour: None,
            })
            .await
            .unwrap();
        let found: std::collections::BTreeMap<_, _> = totals
            .into_iter()
            .map(|t| {
                (
                    (t.key_id.to_string(), t.hour_start, t.outcome),
                    [t.jobs, t.cpu_us, t.wall_us, t.peak_memory_bytes],
                )
            })
            .collect();
        assert_eq!(found, expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_of_an_instance_that_stops_heart_beating_lapse() {
    on_each_backend(|fixture| async move {
        let store = &fixture.store;
        let key = KeyId::parse("lapsekey0000").unwrap();
        let (quiet, busy) = (
            InstanceId::parse("quiet").unwrap(),
            InstanceId::parse("busy").unwrap(),
        );
        let ttl = scaled(Duration::from_secs(2));
        // A key nobody else asks for: only `quiet`'s own heartbeat sees its
        // hold lapse.
        let alone = KeyId::parse("lapsekey0001").unwrap();
        assert_eq!(
            store
                .acquire_slots(&alone, &quiet, 1, 1, ttl)
                .await
                .unwrap(),
            1
        );
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert_eq!(
            store.heartbeat(&quiet, ttl).await.unwrap(),
            [],
            "lapsed, not revived"
        );

        assert_eq!(
            store.acquire_slots(&key, &quiet, 2, 2, ttl).await.unwrap(),
            2
        );
        assert_eq!(
            store.acquire_slots(&key, &busy, 1, 2, ttl).await.unwrap(),
            0
        );

        // While `quiet` heart-beats, its holds live on past the ttl.
        for _ in 0..6 {
            tokio::time::sleep(ttl / 4).await;
            let held = store.heartbeat(&quiet, ttl).await.unwrap();
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].held, 2);
        }
        assert_eq!(
            store.acquire_slots(&key, &busy, 1, 2, ttl).await.unwrap(),
            0
        );

        // It stops: after the ttl its slots count no more.
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert_eq!(
            store.acquire_slots(&key, &busy, 2, 2, ttl).await.unwrap(),
            2
        );
        // A late heartbeat does not revive the lapsed holds.
        assert_eq!(store.heartbeat(&quiet, ttl).await.unwrap(), []);
        assert_eq!(
            store.acquire_slots(&key, &quiet, 1, 2, ttl).await.unwrap(),
            0
        );
    })
    .await;
}
