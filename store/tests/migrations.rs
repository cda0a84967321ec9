//! The schema: migrated from scratch, reopened, refused when newer than
//! this build, migrated once by stores (tasks and processes) opening one
//! database together; damaged and unwritable SQLite files refused at open.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pyexec_store::testing::TempPostgres;
use pyexec_store::{open, KeyLimits, StoreConfig, StoreError, SCHEMA_VERSION};

/// The versions recorded in a SQLite file's `schema_migrations`.
fn sqlite_versions(path: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap();
    let versions = stmt.query_map([], |r| r.get(0)).unwrap();
    versions.map(Result::unwrap).collect()
}

fn postgres_versions(pg: &TempPostgres, database: &str) -> Vec<i64> {
    pg.psql_in(
        database,
        "SELECT version FROM schema_migrations ORDER BY version",
    )
    .lines()
    .map(|l| l.trim().parse().unwrap())
    .collect()
}

fn every_version() -> Vec<i64> {
    (1..=SCHEMA_VERSION).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_from_scratch_and_reopened_as_is() {
    let sqlite = common::sqlite().await;
    let path = sqlite.config.sqlite_path();
    assert_eq!(sqlite_versions(&path), every_version());
    let (key, _) = sqlite
        .store
        .create_key("kept", &KeyLimits::default())
        .await
        .unwrap();
    let again = sqlite.reopen().await;
    assert_eq!(again.get_key(&key.id).await.unwrap().unwrap(), key);
    assert_eq!(
        sqlite_versions(&path),
        every_version(),
        "nothing applied twice"
    );
    let mode = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        mode.permissions().mode() & 0o777,
        0o600,
        "the database is private"
    );
    let dir_mode = std::fs::metadata(&sqlite.config.data_dir).unwrap();
    assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);

    let postgres = common::postgres().await;
    let pg = postgres.pg.as_ref().unwrap();
    assert_eq!(postgres_versions(pg, "pyexec"), every_version());
    let (key, _) = postgres
        .store
        .create_key("kept", &KeyLimits::default())
        .await
        .unwrap();
    let again = postgres.reopen().await;
    assert_eq!(again.get_key(&key.id).await.unwrap().unwrap(), key);
    assert_eq!(postgres_versions(pg, "pyexec"), every_version());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_build_is_refused() {
    let newer = SCHEMA_VERSION + 1;
    let insert = format!(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({newer}, 'future', 0)"
    );
    let expected = StoreError::SchemaTooNew {
        found: newer,
        known: SCHEMA_VERSION,
    };

    let sqlite = common::sqlite().await;
    rusqlite::Connection::open(sqlite.config.sqlite_path())
        .unwrap()
        .execute(&insert, [])
        .unwrap();
    let refused = open(sqlite.config.clone()).await.err();
    assert_eq!(refused, Some(expected.clone()));
    let text = refused.unwrap().to_string();
    assert!(text.contains("newer"), "{text}");

    let postgres = common::postgres().await;
    postgres.pg.as_ref().unwrap().psql(&insert);
    assert_eq!(open(postgres.config.clone()).await.err(), Some(expected));
}

/// Eight stores open one new Postgres database at once, four in this
/// process and four in other processes (this test binary, re-run as a
/// helper): every open succeeds and each version is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_one_postgres_together_migrate_once() {
    let pg = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap();
    for round in 0..3 {
        let database = format!("together{round}");
        let url = pg.create_database(&database);
        let dir = tempfile::tempdir().unwrap();
        let config = common::config(dir.path(), Some(url));
        let processes: Vec<_> = (0..4).map(|_| open_in_another_process(&config)).collect();
        let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(open(config.clone()))).collect();
        for task in tasks {
            task.await.unwrap().expect("every open succeeds");
        }
        for process in processes {
            let out = process.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "helper: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(postgres_versions(&pg, &database), every_version());
    }
}

/// The same with one new SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_one_sqlite_file_together_migrate_once() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = common::config(dir.path(), None);
        let processes: Vec<_> = (0..4).map(|_| open_in_another_process(&config)).collect();
        let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(open(config.clone()))).collect();
        for task in tasks {
            task.await.unwrap().expect("every open succeeds");
        }
        for process in processes {
            let out = process.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "helper: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(sqlite_versions(&config.sqlite_path()), every_version());
    }
}

fn open_in_another_process(config: &StoreConfig) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "open_from_a_helper_process",
            "--ignored",
            "--nocapture",
        ])
        .env("PYEXEC_STORE_HELPER_DATA_DIR", &config.data_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(url) = &config.database_url {
        command.env("PYEXEC_STORE_HELPER_URL", url);
    }
    command.spawn().unwrap()
}

/// Not a test: what the helper processes of the tests above run.
#[tokio::test]
#[ignore = "a helper run by other tests in another process"]
async fn open_from_a_helper_process() {
    let Ok(data_dir) = std::env::var("PYEXEC_STORE_HELPER_DATA_DIR") else {
        return;
    };
    let mut config = common::config(
        Path::new("/unused"),
        std::env::var("PYEXEC_STORE_HELPER_URL").ok(),
    );
    config.data_dir = data_dir.into();
    let store = open(config).await.expect("the helper's open");
    store.ping().await.unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), None);
    std::fs::create_dir_all(&config.data_dir).unwrap();
    std::fs::write(config.sqlite_path(), vec![0x5a; 8192]).unwrap();
    match open(config.clone()).await {
        Err(StoreError::Corrupt(why)) => {
            assert!(
                why.contains(&config.sqlite_path().display().to_string()),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// A SQLite database with a damaged page (its header intact) is caught by
/// the integrity check at open.
#[tokio::test]
async fn a_damaged_sqlite_database_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), None);
    let store = open(config.clone()).await.unwrap();
    for i in 0..200 {
        store
            .create_key(&format!("key number {i}"), &KeyLimits::default())
            .await
            .unwrap();
    }
    drop(store);
    // The store's thread closes the file (checkpointing the WAL into it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = config.sqlite_path();
    let mut bytes = std::fs::read(&path).unwrap();
    let page_size = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    assert!(
        bytes.len() >= 4 * page_size,
        "several pages: {}",
        bytes.len()
    );
    // Scribble over the b-tree header of the pages after the first.
    for page in 1..bytes.len() / page_size {
        bytes[page * page_size..page * page_size + 12].fill(0xee);
    }
    std::fs::write(&path, bytes).unwrap();
    let _ = std::fs::remove_file(path.with_extension("sqlite3-wal"));
    let _ = std::fs::remove_file(path.with_extension("sqlite3-shm"));
    match open(config).await {
        Err(StoreError::Corrupt(why)) => eprintln!("refused: {why}"),
        other => panic!("{other:?}"),
    }
}

/// A tmpfs mounted for the test (root only), unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path) -> Option<Mount> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: skipping the read-only filesystem check");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        mount(&["-t", "tmpfs", "-o", "size=16m", "tmpfs"], at);
        Some(Mount(at.to_owned()))
    }

    fn remount(&self, mode: &str) {
        mount(&["-o", &format!("remount,{mode}")], &self.0);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], at: &Path) {
    let status = Command::new("mount").args(args).arg(at).status().unwrap();
    assert!(status.success(), "mount {args:?} {}", at.display());
}

#[tokio::test]
async fn an_unwritable_sqlite_location_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&dir.path().join("fs")) else {
        return;
    };
    // A data directory that can't be created.
    let mut config = common::config(dir.path(), None);
    config.data_dir = dir.path().join("fs").join("data");
    mount.remount("ro");
    match open(config.clone()).await {
        Err(StoreError::Unavailable(why)) => {
            assert!(
                why.contains("data directory") && why.contains("Read-only"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    // An existing database on a filesystem that became read-only.
    mount.remount("rw");
    let store = open(config.clone()).await.unwrap();
    store
        .create_key("made", &KeyLimits::default())
        .await
        .unwrap();
    drop(store);
    tokio::time::sleep(Duration::from_millis(300)).await;
    mount.remount("ro");
    match open(config).await {
        Err(StoreError::Unavailable(why)) => {
            assert!(why.contains("not writable: EROFS"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
