//! Secrets stay secret: no token or secret in the database's bytes (the
//! SQLite files, a `pg_dump`), nor in any error or `Debug` output; the
//! database password in no error, `Debug` or description.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pyexec_store::{
    open, parse_token, KeyLimits, LimitsPatch, NewSnippet, Store, StoreConfig, StoreError,
    UsageDelta,
};

/// Every spelling of a token's secret that could leak.
struct Leak {
    token: String,
    secret_text: String,
    secret_bytes: Vec<u8>,
    hash: [u8; 32],
    key_id: String,
}

/// Makes keys and uses every operation that touches them.
async fn make_keys(store: &dyn Store) -> Vec<Leak> {
    let mut leaks = Vec::new();
    for i in 0..5 {
        let (record, token) = store
            .create_key(&format!("secret test {i}"), &KeyLimits::default())
            .await
            .unwrap();
        let text = token.to_string();
        let secret_text = text[17..].to_string();
        leaks.push(Leak {
            secret_bytes: URL_SAFE_NO_PAD.decode(&secret_text).unwrap(),
            secret_text,
            token: text,
            hash: *record.secret_hash.as_bytes(),
            key_id: record.id.to_string(),
        });
        store
            .set_limits(&record.id, &LimitsPatch::default())
            .await
            .unwrap();
        let delta = UsageDelta {
            key_id: record.id.clone(),
            hour_start: 3600,
            outcome: "ok".into(),
            jobs: 1,
            cpu_us: 1,
            wall_us: 1,
            peak_memory_bytes: 1,
        };
        store
            .record_usage(&format!("b{i}"), &[delta])
            .await
            .unwrap();
        store
            .create_snippet(&NewSnippet {
                key_id: Some(record.id.clone()),
                script: "print(1)".into(),
                input: None,
                limits: None,
            })
            .await
            .unwrap();
    }
    store
        .revoke(&pyexec_store::KeyId::parse(&leaks[0].key_id).unwrap())
        .await
        .unwrap();
    leaks
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` hold no secret; they do hold what is stored in its place (so
/// that the search is known to look at the right data).
fn assert_no_secret_in(bytes: &[u8], leaks: &[Leak], hash_spelled: impl Fn(&[u8; 32]) -> Vec<u8>) {
    for leak in leaks {
        assert!(
            !contains(bytes, leak.token.as_bytes()),
            "the token is in the database"
        );
        assert!(
            !contains(bytes, leak.secret_text.as_bytes()),
            "the secret is in the database"
        );
        assert!(
            !contains(bytes, &leak.secret_bytes),
            "the raw secret is in the database"
        );
        assert!(
            contains(bytes, leak.key_id.as_bytes()),
            "the key id is stored"
        );
        assert!(
            contains(bytes, &hash_spelled(&leak.hash)),
            "the hash is stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_in_the_sqlite_files() {
    let fixture = common::sqlite().await;
    let leaks = make_keys(&*fixture.store).await;
    // The main file and the write-ahead log, as they are while running...
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&fixture.config.data_dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert_no_secret_in(&bytes, &leaks, |h| h.to_vec());
    // ...and after the store closed (the log folded into the file).
    drop(fixture.store);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let file = std::fs::read(fixture.config.sqlite_path()).unwrap();
    assert_no_secret_in(&file, &leaks, |h| h.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_in_a_postgres_dump() {
    let fixture = common::postgres().await;
    let leaks = make_keys(&*fixture.store).await;
    let pg = fixture.pg.as_ref().unwrap();
    let dump = tokio::task::block_in_place(|| pg.dump());
    // pg_dump writes bytea as hex.
    assert_no_secret_in(&dump, &leaks, |h| format!("\\\\x{}", hex(h)).into_bytes());
}

#[tokio::test]
async fn tokens_stay_out_of_debug_and_errors() {
    let fixture = common::sqlite().await;
    let store = &*fixture.store;
    let (record, token) = store
        .create_key("debugged", &KeyLimits::default())
        .await
        .unwrap();
    let text = token.to_string();
    let secret = &text[17..];
    let (_, parsed) = parse_token(&text).unwrap();
    let mut shown = vec![
        format!("{token:?}"),
        format!("{record:?}"),
        format!("{:?}", (&record, &token)),
        format!("{parsed:?}"),
        format!("{store:?}"),
    ];
    // Errors of calls made with the token's parts in hand.
    let errors: Vec<StoreError> = vec![
        store
            .create_key(&text.repeat(3), &KeyLimits::default())
            .await
            .unwrap_err(),
        store
            .record_usage(&format!("{text}{text}"), &[])
            .await
            .unwrap_err(),
    ];
    for e in &errors {
        shown.push(format!("{e}"));
        shown.push(format!("{e:?}"));
    }
    for s in &shown {
        assert!(!s.contains(secret), "the secret is shown: {s}");
    }
}

/// A password that is also the database's name, so that the server's own
/// message ("database … does not exist") quotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_stays_out_of_errors_and_debug() {
    let fixture = common::postgres().await;
    let pg = fixture.pg.as_ref().unwrap();
    let password = pg.password().to_string();
    let url = |user: &str, password: &str, database: &str| {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            pg.port()
        )
    };
    let config = |url: String| -> StoreConfig {
        let mut config = fixture.config.clone();
        config.database_url = Some(url);
        config
    };
    let cases = [
        // Right password, a database named like it: the server names it.
        config(url("pyexec", &password, &password)),
        // A wrong password (the server rejects it by name, not value).
        config(url("pyexec", &format!("{password}x"), "pyexec")),
        // A malformed URL around the password.
        config(format!(
            "postgres://pyexec:{password}@127.0.0.1:notaport/pyexec"
        )),
        config(format!(
            "{}?sslmode=bogus",
            url("pyexec", &password, "pyexec")
        )),
        config(format!("host=127.0.0.1 password={password} port=bad")),
    ];
    for config in cases {
        let shown_config = format!("{config:?}");
        assert!(!shown_config.contains(&password), "{shown_config}");
        let error = open(config).await.expect_err("refused");
        for shown in [format!("{error}"), format!("{error:?}")] {
            eprintln!("{shown}");
            assert!(!shown.contains(&password), "the password is shown: {shown}");
        }
    }
    let store = &fixture.store;
    for shown in [
        format!("{store:?}"),
        store.describe(),
        format!("{:?}", fixture.config),
    ] {
        assert!(!shown.contains(&password), "{shown}");
        assert!(shown.contains("pyexec@127.0.0.1"), "{shown}");
    }
}
