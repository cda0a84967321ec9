//! Every operation of the store, one body run against each backend (SQLite
//! in a temporary directory, Postgres in a throwaway cluster, over TCP and
//! over its Unix socket).

mod common;

use std::time::Duration;

use pyexec_store::{
    parse_token, Change, InstanceId, KeyId, KeyLimits, LimitsPatch, NewSnippet, Recorded,
    SnippetDeletion, SnippetId, Store, StoreError, UsageDelta, UsageFilter, Window,
};

use common::{on_each_backend, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_each_backend() {
    on_each_backend(|fixture| async move {
        let store = &*fixture.store;
        ping(store).await;
        keys(store).await;
        usage(store).await;
        snippets(store).await;
        counters(store).await;
        slots(store).await;
        purge(store).await;
    })
    .await;
}

/// The same operations through the cluster's Unix socket (a directory
/// named like Cloud SQL's `/cloudsql/PROJECT:REGION:INSTANCE`), given as a
/// libpq key/value string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_a_unix_socket() {
    let fixture = common::postgres().await;
    let pg = fixture.pg.as_ref().unwrap();
    let url = pg.socket_url();
    assert!(url.contains("/cloudsql/project:region:instance"), "{url}");
    let config = common::config(fixture.dir.path(), Some(url));
    let store = pyexec_store::open(config)
        .await
        .expect("open over the socket");
    assert!(
        store.describe().contains("project:region:instance"),
        "{}",
        store.describe()
    );
    ping(&*store).await;
    keys(&*store).await;
    // Connections over TCP and over the socket see the same database.
    assert_eq!(
        fixture.store.list_keys().await.unwrap(),
        store.list_keys().await.unwrap()
    );
}

fn key(text: &str) -> KeyId {
    KeyId::parse(text).unwrap()
}

fn instance(text: &str) -> InstanceId {
    InstanceId::parse(text).unwrap()
}

async fn ping(store: &dyn Store) {
    store.ping().await.expect("ping");
    eprintln!("{}", store.describe());
}

async fn keys(store: &dyn Store) {
    let limits = KeyLimits {
        rate_per_s: Some(2.5),
        burst: Some(5),
        max_concurrent: Some(3),
        cpu_s_per_day: Some(3600.0),
        max_timeout_s: Some(30.0),
        max_memory_mb: Some(512),
        weight: Some(2),
    };
    let (alpha, token) = store.create_key("alpha", &limits).await.unwrap();
    assert_eq!(alpha.name, "alpha");
    assert_eq!(alpha.limits, limits);
    assert!(!alpha.is_revoked());
    let (token_id, secret) = parse_token(&token.to_string()).expect("a well-formed token");
    assert_eq!(token_id, alpha.id);
    assert_eq!(token.key_id(), alpha.id);
    assert!(alpha.secret_hash.matches(&secret));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (alpha.created_at - now).abs() < 60,
        "{} vs {now}",
        alpha.created_at
    );

    let (beta, _) = store
        .create_key("beta ✓", &KeyLimits::default())
        .await
        .unwrap();
    assert_ne!(alpha.id, beta.id);
    assert_eq!(beta.limits, KeyLimits::default());

    assert_eq!(
        store.get_key(&alpha.id).await.unwrap().as_ref(),
        Some(&alpha)
    );
    assert_eq!(store.get_key(&key("nosuchkey000")).await.unwrap(), None);
    let listed = store.list_keys().await.unwrap();
    assert!(
        listed.contains(&alpha) && listed.contains(&beta),
        "{listed:?}"
    );

    for (name, limits) in [
        ("", KeyLimits::default()),
        ("bad\nname", KeyLimits::default()),
        (
            "ok",
            KeyLimits {
                burst: Some(0),
                ..KeyLimits::default()
            },
        ),
        (
            "ok",
            KeyLimits {
                rate_per_s: Some(f64::NAN),
                ..KeyLimits::default()
            },
        ),
    ] {
        let refused = store.create_key(name, &limits).await.err();
        assert!(
            matches!(refused, Some(StoreError::Invalid(_))),
            "{name:?}: {refused:?}"
        );
    }
    assert_eq!(
        store.list_keys().await.unwrap().len(),
        listed.len(),
        "nothing made"
    );

    // Patches: set one, clear one, keep the others.
    let patch = LimitsPatch {
        rate_per_s: Change::Set(10.0),
        burst: Change::Clear,
        ..LimitsPatch::default()
    };
    let patched = store.set_limits(&alpha.id, &patch).await.unwrap();
    let expected = KeyLimits {
        rate_per_s: Some(10.0),
        burst: None,
        ..limits
    };
    assert_eq!(patched.limits, expected);
    assert_eq!(
        store.get_key(&alpha.id).await.unwrap().unwrap().limits,
        expected
    );
    let bad = LimitsPatch {
        weight: Change::Set(0),
        ..LimitsPatch::default()
    };
    assert!(matches!(
        store.set_limits(&alpha.id, &bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.get_key(&alpha.id).await.unwrap().unwrap().limits,
        expected
    );
    assert_eq!(
        store.set_limits(&key("nosuchkey000"), &patch).await.err(),
        Some(StoreError::NotFound)
    );
    let replaced = KeyLimits {
        max_concurrent: Some(1),
        ..KeyLimits::default()
    };
    let record = store
        .set_limits(&alpha.id, &LimitsPatch::replace_with(&replaced))
        .await
        .unwrap();
    assert_eq!(record.limits, replaced);

    // Revocation: once, for good; a revoked key stays listed.
    let revoked = store.revoke(&beta.id).await.unwrap();
    let at = revoked.revoked_at.expect("revoked");
    assert!(at >= beta.created_at);
    let again = store.revoke(&beta.id).await.unwrap();
    assert_eq!(again.revoked_at, Some(at));
    assert_eq!(
        store.revoke(&key("nosuchkey000")).await.err(),
        Some(StoreError::NotFound)
    );
    let listed = store.list_keys().await.unwrap();
    let beta_now = listed.iter().find(|k| k.id == beta.id).unwrap();
    assert!(beta_now.is_revoked());
    assert!(!listed
        .iter()
        .find(|k| k.id == alpha.id)
        .unwrap()
        .is_revoked());
    // A revoked key's limits can still be changed.
    store.set_limits(&beta.id, &patch).await.unwrap();
}

fn delta(
    key_id: &KeyId,
    hour: i64,
    outcome: &str,
    jobs: u64,
    cpu_us: u64,
    peak: u64,
) -> UsageDelta {
    UsageDelta {
        key_id: key_id.clone(),
        hour_start: hour,
        outcome: outcome.into(),
        jobs,
        cpu_us,
        wall_us: cpu_us * 2,
        peak_memory_bytes: peak,
    }
}

async fn usage(store: &dyn Store) {
    let a = key("usagekeyaaaa");
    let b = key("usagekeybbbb");
    let h = 3600 * 500_000;
    // Beyond 2^53, where a double would round: sums must stay exact.
    let big = (1u64 << 53) + 1;
    let batch = [
        delta(&a, h, "ok", 1, big, 100),
        delta(&a, h, "ok", 2, big, 300),
        delta(&a, h, "timeout", 1, 7, 50),
        delta(&a, h + 3600, "ok", 1, 5, 10),
        delta(&b, h, "ok", 4, 11, 999),
    ];
    assert_eq!(
        store.record_usage("batch-1", &batch).await.unwrap(),
        Recorded::Applied
    );
    // The same batch again (a retry after a lost answer): not counted twice.
    assert_eq!(
        store.record_usage("batch-1", &batch).await.unwrap(),
        Recorded::AlreadyApplied
    );
    let more = [delta(&a, h, "ok", 1, 3, 200)];
    assert_eq!(
        store.record_usage("batch-2", &more).await.unwrap(),
        Recorded::Applied
    );
    assert_eq!(
        store.record_usage("batch-empty", &[]).await.unwrap(),
        Recorded::Applied
    );

    let all = store
        .usage(&UsageFilter {
            key_id: None,
            since_hour: h,
            until_hour: None,
        })
        .await
        .unwrap();
    let rows: Vec<_> = all
        .iter()
        .map(|t| {
            (
                t.key_id.as_str(),
                t.hour_start,
                t.outcome.as_str(),
                t.jobs,
                t.cpu_us,
                t.wall_us,
                t.peak_memory_bytes,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("usagekeyaaaa", h, "ok", 4, 2 * big + 3, 4 * big + 6, 300),
            ("usagekeyaaaa", h, "timeout", 1, 7, 14, 50),
            ("usagekeyaaaa", h + 3600, "ok", 1, 5, 10, 10),
            ("usagekeybbbb", h, "ok", 4, 11, 22, 999),
        ]
    );

    let only_a_first_hour = store
        .usage(&UsageFilter {
            key_id: Some(a.clone()),
            since_hour: h,
            until_hour: Some(h + 3600),
        })
        .await
        .unwrap();
    assert_eq!(only_a_first_hour.len(), 2);
    assert!(only_a_first_hour
        .iter()
        .all(|t| t.key_id == a && t.hour_start == h));
    let later = store
        .usage(&UsageFilter {
            key_id: None,
            since_hour: h + 3600,
            until_hour: None,
        })
        .await
        .unwrap();
    assert_eq!(later.len(), 1);

    // A bad batch adds nothing, not even its good deltas.
    let bad = [delta(&a, h, "ok", 1, 1, 1), delta(&a, h + 1, "ok", 1, 1, 1)];
    assert!(matches!(
        store.record_usage("batch-3", &bad).await,
        Err(StoreError::Invalid(_))
    ));
    for bad_id in ["", "has space", &"x".repeat(65)] {
        assert!(matches!(
            store.record_usage(bad_id, &more).await,
            Err(StoreError::Invalid(_))
        ));
    }
    // A total beyond i64::MAX is refused rather than wrapped or rounded.
    let huge = [delta(&b, h, "ok", i64::MAX as u64, 0, 0)];
    assert!(
        matches!(
            store.record_usage("batch-4", &huge).await,
            Err(StoreError::Invalid(_))
        ),
        "overflow refused"
    );
    let after = store
        .usage(&UsageFilter {
            key_id: None,
            since_hour: h,
            until_hour: None,
        })
        .await
        .unwrap();
    assert_eq!(after, all, "refused batches changed nothing");
    // A refused batch's id was not spent: the fixed batch goes through.
    let fixed = [delta(&a, h, "ok", 1, 1, 1)];
    assert_eq!(
        store.record_usage("batch-3", &fixed).await.unwrap(),
        Recorded::Applied
    );
}

async fn snippets(store: &dyn Store) {
    let owner = key("snippetowner");
    let other = key("someoneelse0");
    let new = NewSnippet {
        key_id: Some(owner.clone()),
        script: "import json\nprint('héllo')\n".into(),
        input: Some(r#"{"x": [1, 2.5, "é"]}"#.into()),
        limits: Some(r#"{"timeout_s": 2}"#.into()),
    };
    let saved = store.create_snippet(&new).await.unwrap();
    assert_eq!(saved.key_id, new.key_id);
    assert_eq!(saved.script, new.script);
    assert!(SnippetId::parse(saved.id.as_str()).is_some());
    assert_eq!(
        store.get_snippet(&saved.id).await.unwrap().as_ref(),
        Some(&saved)
    );
    let unknown = SnippetId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert_eq!(store.get_snippet(&unknown).await.unwrap(), None);

    let anonymous = store
        .create_snippet(&NewSnippet {
            key_id: None,
            script: "1".into(),
            input: None,
            limits: None,
        })
        .await
        .unwrap();
    assert_ne!(anonymous.id, saved.id);
    assert_eq!(anonymous.input, None);

    assert_eq!(
        store.delete_snippet(&saved.id, Some(&other)).await.unwrap(),
        SnippetDeletion::NotOwner
    );
    assert_eq!(
        store.delete_snippet(&saved.id, None).await.unwrap(),
        SnippetDeletion::NotOwner
    );
    assert_eq!(
        store
            .delete_snippet(&anonymous.id, Some(&owner))
            .await
            .unwrap(),
        SnippetDeletion::NotOwner
    );
    assert!(
        store.get_snippet(&saved.id).await.unwrap().is_some(),
        "still there"
    );
    assert_eq!(
        store.delete_snippet(&saved.id, Some(&owner)).await.unwrap(),
        SnippetDeletion::Deleted
    );
    assert_eq!(
        store.delete_snippet(&saved.id, Some(&owner)).await.unwrap(),
        SnippetDeletion::NotFound
    );
    assert_eq!(store.get_snippet(&saved.id).await.unwrap(), None);
    assert_eq!(
        store.delete_snippet(&anonymous.id, None).await.unwrap(),
        SnippetDeletion::Deleted
    );

    let nul = NewSnippet {
        key_id: None,
        script: "print('\0')".into(),
        input: None,
        limits: None,
    };
    assert!(matches!(
        store.create_snippet(&nul).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn counters(store: &dyn Store) {
    let k = key("counterkey00");
    let w = Window {
        start: 1_800_000_000,
        len_s: 1,
    };
    let lease = |want, cap| store.lease_counter(&k, "rate", w, want, cap);
    let g = lease(3, 5).await.unwrap();
    assert_eq!((g.granted, g.window_total), (3, 3));
    let g = lease(3, 5).await.unwrap();
    assert_eq!((g.granted, g.window_total), (2, 5));
    let g = lease(1, 5).await.unwrap();
    assert_eq!((g.granted, g.window_total), (0, 5));
    store.return_counter(&k, "rate", w, 2).await.unwrap();
    let g = lease(5, 5).await.unwrap();
    assert_eq!((g.granted, g.window_total), (2, 5));
    // A lower cap (a changed limit) grants nothing more.
    assert_eq!(lease(1, 4).await.unwrap().granted, 0);
    // Returning more than was granted floors at zero.
    store.return_counter(&k, "rate", w, 100).await.unwrap();
    assert_eq!(lease(0, 5).await.unwrap().window_total, 0);
    // Other counters, windows and keys are separate.
    let g = store.lease_counter(&k, "cpu_ms", w, 7, 10).await.unwrap();
    assert_eq!(g.granted, 7);
    let next = Window {
        start: w.start + 1,
        ..w
    };
    assert_eq!(
        store
            .lease_counter(&k, "rate", next, 5, 5)
            .await
            .unwrap()
            .granted,
        5
    );
    let other = key("counterkey01");
    assert_eq!(
        store
            .lease_counter(&other, "rate", w, 5, 5)
            .await
            .unwrap()
            .granted,
        5
    );
    // Returns to a window never leased change nothing.
    let never = Window {
        start: 42,
        len_s: 60,
    };
    store.return_counter(&k, "rate", never, 5).await.unwrap();
    assert_eq!(
        store
            .lease_counter(&k, "rate", never, 0, 5)
            .await
            .unwrap()
            .window_total,
        0
    );

    for refused in [
        store.lease_counter(&k, "Rate", w, 1, 1).await.err(),
        store.lease_counter(&k, "rate", w, -1, 1).await.err(),
        store.lease_counter(&k, "rate", w, 1, -1).await.err(),
        store
            .lease_counter(&k, "rate", Window { start: 0, len_s: 0 }, 1, 1)
            .await
            .err(),
        store.return_counter(&k, "rate", w, -1).await.err(),
    ] {
        assert!(
            matches!(refused, Some(StoreError::Invalid(_))),
            "{refused:?}"
        );
    }
}

async fn slots(store: &dyn Store) {
    let k = key("slotkey00000");
    let (one, two) = (instance("instance-1"), instance("instance-2"));
    let ttl = Duration::from_secs(60);
    assert_eq!(store.acquire_slots(&k, &one, 2, 3, ttl).await.unwrap(), 2);
    assert_eq!(store.acquire_slots(&k, &two, 2, 3, ttl).await.unwrap(), 1);
    assert_eq!(store.acquire_slots(&k, &two, 1, 3, ttl).await.unwrap(), 0);
    store.release_slots(&k, &one, 1).await.unwrap();
    assert_eq!(store.acquire_slots(&k, &two, 5, 3, ttl).await.unwrap(), 1);
    let other = key("slotkey00001");
    assert_eq!(
        store.acquire_slots(&other, &one, 1, 1, ttl).await.unwrap(),
        1
    );

    let held = store.heartbeat(&one, ttl).await.unwrap();
    let held: Vec<_> = held.iter().map(|h| (h.key_id.as_str(), h.held)).collect();
    assert_eq!(held, [("slotkey00000", 1), ("slotkey00001", 1)]);
    let held = store.heartbeat(&two, ttl).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].held, 2);

    // Releasing more than held empties the hold; others are untouched.
    store.release_slots(&k, &one, 10).await.unwrap();
    let held = store.heartbeat(&one, ttl).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].key_id, other);
    // A smaller max (a changed limit) grants nothing while the holds exceed it.
    assert_eq!(store.acquire_slots(&k, &one, 1, 1, ttl).await.unwrap(), 0);
    assert_eq!(store.heartbeat(&instance("nobody"), ttl).await.unwrap(), []);

    for refused in [
        store
            .acquire_slots(&k, &one, 1, 3, Duration::ZERO)
            .await
            .err(),
        store
            .heartbeat(&one, Duration::from_secs(3 * 24 * 3600))
            .await
            .err(),
    ] {
        assert!(
            matches!(refused, Some(StoreError::Invalid(_))),
            "{refused:?}"
        );
    }
}

async fn purge(store: &dyn Store) {
    let k = key("purgekey0000");
    // A window that ended long ago is purged: leasing it again starts afresh.
    let old = Window {
        start: 1000,
        len_s: 60,
    };
    assert_eq!(
        store
            .lease_counter(&k, "rate", old, 5, 5)
            .await
            .unwrap()
            .granted,
        5
    );
    assert_eq!(
        store
            .lease_counter(&k, "rate", old, 5, 5)
            .await
            .unwrap()
            .granted,
        0
    );
    // A hold that expires.
    let ttl = Duration::from_millis(1);
    assert_eq!(
        store
            .acquire_slots(&k, &instance("brief"), 1, 1, ttl)
            .await
            .unwrap(),
        1
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purged = store.purge().await.unwrap();
    assert!(purged.counter_windows >= 1, "{purged:?}");
    assert!(purged.slot_holds >= 1, "{purged:?}");
    assert_eq!(
        store
            .lease_counter(&k, "rate", old, 5, 5)
            .await
            .unwrap()
            .granted,
        5
    );
    // Current windows and live holds stay.
    let now_window = Window {
        start: 1_900_000_000,
        len_s: 86_400,
    };
    store
        .lease_counter(&k, "cpu_ms", now_window, 3, 9)
        .await
        .unwrap();
    store
        .acquire_slots(&k, &instance("live"), 1, 5, Duration::from_secs(60))
        .await
        .unwrap();
    store.purge().await.unwrap();
    assert_eq!(
        store
            .lease_counter(&k, "cpu_ms", now_window, 0, 9)
            .await
            .unwrap()
            .window_total,
        3
    );
    assert_eq!(
        store
            .heartbeat(&instance("live"), Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Usage batch ids are forgotten after the retention: the batch ids table
/// is aged by hand (a week can't be waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_forgets_old_batch_ids() {
    async fn check(fixture: &Fixture, age: impl Fn(&Fixture)) {
        let store = &*fixture.store;
        let d = [delta(&key("purgekey0001"), 0, "ok", 1, 1, 1)];
        assert_eq!(
            store.record_usage("old-batch", &d).await.unwrap(),
            Recorded::Applied
        );
        assert_eq!(
            store.record_usage("new-batch", &d).await.unwrap(),
            Recorded::Applied
        );
        age(fixture);
        assert_eq!(store.purge().await.unwrap().usage_batches, 1);
        assert_eq!(
            store.record_usage("old-batch", &d).await.unwrap(),
            Recorded::Applied
        );
        assert_eq!(
            store.record_usage("new-batch", &d).await.unwrap(),
            Recorded::AlreadyApplied
        );
    }
    let sql = "UPDATE usage_batches SET applied_at = applied_at - 8 * 86400 \
               WHERE batch_id = 'old-batch'";
    let sqlite = common::sqlite().await;
    check(&sqlite, |f| {
        let conn = rusqlite::Connection::open(f.config.sqlite_path()).unwrap();
        assert_eq!(conn.execute(sql, []).unwrap(), 1);
    })
    .await;
    let postgres = common::postgres().await;
    check(&postgres, |f| {
        f.pg.as_ref().unwrap().psql(sql);
    })
    .await;
}
