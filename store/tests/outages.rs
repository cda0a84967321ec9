//! The database going away under a running store: every call answers
//! `Unavailable` within its deadline, nothing panics or hangs, and the
//! same store works again once the database is back, without reopening.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyexec_store::testing::TempPostgres;
use pyexec_store::{open, InstanceId, KeyId, KeyLimits, Store, StoreError, UsageDelta, Window};

use common::scaled;

type Call<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// One call of each kind, reads and writes.
fn calls<'a>(store: &'a dyn Store, key: &'a KeyId) -> Vec<(&'static str, Call<'a>)> {
    let instance = InstanceId::parse("outage-test").unwrap();
    let window = Window {
        start: 1_900_000_000,
        len_s: 60,
    };
    let delta = UsageDelta {
        key_id: key.clone(),
        hour_start: 0,
        outcome: "ok".into(),
        jobs: 1,
        cpu_us: 1,
        wall_us: 1,
        peak_memory_bytes: 1,
    };
    let batch = format!("outage-{}", std::process::id());
    vec![
        ("ping", Box::pin(store.ping())),
        (
            "list_keys",
            Box::pin(async move { store.list_keys().await.map(drop) }),
        ),
        (
            "get_key",
            Box::pin(async move { store.get_key(key).await.map(drop) }),
        ),
        (
            "create_key",
            Box::pin(async move {
                store
                    .create_key("during", &KeyLimits::default())
                    .await
                    .map(drop)
            }),
        ),
        (
            "record_usage",
            Box::pin(async move { store.record_usage(&batch, &[delta]).await.map(drop) }),
        ),
        (
            "lease_counter",
            Box::pin(async move {
                store
                    .lease_counter(key, "rate", window, 1, 10)
                    .await
                    .map(drop)
            }),
        ),
        (
            "acquire_slots",
            Box::pin(async move {
                store
                    .acquire_slots(key, &instance, 1, 10, Duration::from_secs(60))
                    .await
                    .map(drop)
            }),
        ),
    ]
}

/// Runs every call; each must fail `Unavailable` within `bound`. Returns
/// the slowest answer.
async fn all_unavailable_within(store: &dyn Store, key: &KeyId, bound: Duration) -> Duration {
    let mut slowest = Duration::ZERO;
    for (name, call) in calls(store, key) {
        let start = Instant::now();
        let answer = call.await;
        let took = start.elapsed();
        eprintln!("{name}: {took:?} {answer:?}");
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "{name}: {answer:?}"
        );
        assert!(took <= bound, "{name} took {took:?}, more than {bound:?}");
        slowest = slowest.max(took);
    }
    slowest
}

async fn all_succeed(store: &dyn Store, key: &KeyId) {
    for (name, call) in calls(store, key) {
        call.await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

async fn start_postgres() -> TempPostgres {
    tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap()
}

async fn in_blocking(mut pg: TempPostgres, f: fn(&mut TempPostgres)) -> TempPostgres {
    tokio::task::spawn_blocking(move || {
        f(&mut pg);
        pg
    })
    .await
    .unwrap()
}

/// Opens a store with a short deadline, its pool warmed with several
/// connections.
async fn postgres_store(pg: &TempPostgres, dir: &Path) -> (Arc<dyn Store>, Duration, KeyId) {
    let mut config = common::config(dir, Some(pg.url()));
    config.op_timeout = scaled(Duration::from_secs(2));
    let op_timeout = config.op_timeout;
    let store = open(config).await.unwrap();
    let (key, _) = store
        .create_key("before", &KeyLimits::default())
        .await
        .unwrap();
    let warm: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.list_keys().await.unwrap() })
        })
        .collect();
    for task in warm {
        task.await.unwrap();
    }
    (store, op_timeout, key.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_fails_within_the_deadline_and_recovers_without_reopening() {
    let pg = start_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, op_timeout, key) = postgres_store(&pg, dir.path()).await;

    let pg = in_blocking(pg, TempPostgres::stop).await;
    let bound = op_timeout + scaled(Duration::from_secs(1));
    let slowest = all_unavailable_within(&*store, &key, bound).await;
    eprintln!("stopped: slowest answer {slowest:?} (deadline {op_timeout:?})");
    // A second round: nothing is left stuck by the first.
    all_unavailable_within(&*store, &key, bound).await;

    let pg = in_blocking(pg, TempPostgres::restart).await;
    let start = Instant::now();
    all_succeed(&*store, &key).await;
    eprintln!("back: every call succeeded at once ({:?})", start.elapsed());
    let names: Vec<String> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert!(names.contains(&"before".to_string()), "{names:?}");
    drop(pg);
}

/// A database host that hangs (every Postgres process stopped with
/// SIGSTOP: connections stay open, nothing answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hanging_fails_within_the_deadline_and_recovers() {
    let pg = start_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, op_timeout, key) = postgres_store(&pg, dir.path()).await;

    pg.freeze();
    let bound = op_timeout + scaled(Duration::from_secs(1));
    let slowest = all_unavailable_within(&*store, &key, bound).await;
    eprintln!("hanging: slowest answer {slowest:?} (deadline {op_timeout:?})");
    pg.thaw();
    all_succeed(&*store, &key).await;
}

/// A "database" that accepts connections and never says a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_against_a_silent_server_fails_within_the_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(
        dir.path(),
        Some(format!("postgres://u:secret@127.0.0.1:{port}/d")),
    );
    config.op_timeout = scaled(Duration::from_secs(1));
    config.open_timeout = scaled(Duration::from_secs(2));
    let start = Instant::now();
    let refused = open(config.clone()).await.err();
    let took = start.elapsed();
    eprintln!("open: {took:?} {refused:?}");
    assert!(
        matches!(refused, Some(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        took <= config.open_timeout + scaled(Duration::from_secs(1)),
        "{took:?}"
    );
    held.abort();
}

fn sqlite_config(data_dir: PathBuf) -> pyexec_store::StoreConfig {
    let mut config = common::config(Path::new("/unused"), None);
    config.data_dir = data_dir;
    config.op_timeout = scaled(Duration::from_secs(2));
    config
}

async fn names(store: &dyn Store) -> Vec<String> {
    let mut names: Vec<String> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    names.sort();
    names
}

fn expect_unavailable<T: std::fmt::Debug>(answer: Result<T, StoreError>, saying: &str) {
    match answer {
        Err(StoreError::Unavailable(why)) => assert!(why.contains(saying), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// The file moved away (an operator's `mv`): refused, not recreated; moved
/// back: the same store carries on with everything written before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_moved_away_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path().join("data"));
    let path = config.sqlite_path();
    let store = open(config.clone()).await.unwrap();
    store
        .create_key("before", &KeyLimits::default())
        .await
        .unwrap();

    let away = dir.path().join("moved.sqlite3");
    std::fs::rename(&path, &away).unwrap();
    expect_unavailable(
        store.create_key("during", &KeyLimits::default()).await,
        "gone",
    );
    expect_unavailable(store.list_keys().await, "gone");
    expect_unavailable(store.ping().await, "gone");
    assert!(!path.exists(), "no new database made in its place");

    std::fs::rename(&away, &path).unwrap();
    store
        .create_key("after", &KeyLimits::default())
        .await
        .unwrap();
    assert_eq!(names(&*store).await, ["after", "before"]);
}

/// The file deleted: refused and not recreated while running; the next
/// start makes a new, empty store (not one made of the deleted one's
/// left-over write-ahead log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path().join("data"));
    let path = config.sqlite_path();
    let store = open(config.clone()).await.unwrap();
    for i in 0..20 {
        store
            .create_key(&format!("old {i}"), &KeyLimits::default())
            .await
            .unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    expect_unavailable(
        store.create_key("during", &KeyLimits::default()).await,
        "gone",
    );
    expect_unavailable(
        store.get_key(&KeyId::parse("abcdefghijkl").unwrap()).await,
        "gone",
    );
    assert!(!path.exists(), "not recreated while running");
    // The process ends (its log stays behind: SQLite keeps the log of a
    // database that was deleted), then starts again.
    drop(store);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = open(config).await.unwrap();
    assert_eq!(names(&*restarted).await, Vec::<String>::new());
    restarted
        .create_key("new", &KeyLimits::default())
        .await
        .unwrap();
    assert_eq!(names(&*restarted).await, ["new"]);
}

/// Another file moved over it: refused (the running store never writes
/// into a file it did not open); a restart takes up the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path().join("data"));
    let path = config.sqlite_path();
    let store = open(config.clone()).await.unwrap();
    store
        .create_key("mine", &KeyLimits::default())
        .await
        .unwrap();

    let other_config = sqlite_config(dir.path().join("other"));
    let other = open(other_config.clone()).await.unwrap();
    other
        .create_key("theirs", &KeyLimits::default())
        .await
        .unwrap();
    drop(other);
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::rename(other_config.sqlite_path(), &path).unwrap();
    let before = std::fs::read(&path).unwrap();

    expect_unavailable(
        store.create_key("intruder", &KeyLimits::default()).await,
        "replaced",
    );
    expect_unavailable(store.list_keys().await, "replaced");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the new file untouched"
    );
}

/// A tmpfs mounted for the test (root only), unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: skipping (mounting a filesystem needs root)");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], at);
        Some(Mount(at.to_owned()))
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

/// An ext4 filesystem in a file, on a loop device, mounted for the test
/// (root only); unmounted and detached on drop.
struct Ext4 {
    device: String,
    at: PathBuf,
}

impl Ext4 {
    fn mount(dir: &Path) -> Option<Ext4> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: skipping (mounting a filesystem needs root)");
            return None;
        }
        let image = dir.join("ext4.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let fs = Ext4 {
            device,
            at: dir.join("fs"),
        };
        std::fs::create_dir_all(&fs.at).unwrap();
        fs.mount_again();
        Some(fs)
    }

    fn mount_again(&self) {
        mount(&["-o", "errors=remount-ro", &self.device], &self.at);
    }

    /// What the kernel does on an ext4 error with `errors=remount-ro`: the
    /// filesystem turns read-only under every open file.
    fn fail(&self) {
        let name = Path::new(&self.device)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        std::fs::write(
            format!("/sys/fs/ext4/{name}/trigger_fs_error"),
            "pyexec store test",
        )
        .unwrap();
    }

    /// What an operator does next: unmount, check, mount again.
    fn repair(&self) {
        run("umount", &[self.at.to_str().unwrap()]);
        // Through the loop device, not the image file: the next mount reads
        // the device's cache, which must see the checker's repairs.
        let status = Command::new("e2fsck")
            .args(["-f", "-y", &self.device])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.code().is_some_and(|c| c <= 1), "e2fsck: {status}");
        self.mount_again();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// The filesystem turns read-only under the running store (Linux refuses
/// `mount -o remount,ro` while a file is open for writing, so it is made
/// read-only the way the kernel does it: an ext4 error). Writes answer
/// `Unavailable`; once the filesystem is repaired and mounted again, the
/// same store carries on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_filesystem_turned_read_only_then_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Ext4::mount(dir.path()) else {
        return;
    };
    let config = sqlite_config(fs.at.join("data"));
    let store = open(config).await.unwrap();
    store
        .create_key("before", &KeyLimits::default())
        .await
        .unwrap();

    fs.fail();
    expect_unavailable(store.create_key("during", &KeyLimits::default()).await, "");
    let delta = UsageDelta {
        key_id: KeyId::parse("abcdefghijkl").unwrap(),
        hour_start: 0,
        outcome: "ok".into(),
        jobs: 1,
        cpu_us: 1,
        wall_us: 1,
        peak_memory_bytes: 1,
    };
    let refused = store
        .record_usage("ro-batch", std::slice::from_ref(&delta))
        .await;
    eprintln!("read-only: {refused:?}");
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );

    fs.repair();
    store
        .create_key("after", &KeyLimits::default())
        .await
        .unwrap();
    assert_eq!(names(&*store).await, ["after", "before"]);
    store.record_usage("ro-batch", &[delta]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_then_with_room_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(&dir.path().join("fs"), "4m") else {
        return;
    };
    let config = sqlite_config(dir.path().join("fs").join("data"));
    let store = open(config).await.unwrap();
    let filler = dir.path().join("fs").join("filler");
    // Fill the filesystem to the last block.
    let mut size = 4 << 20;
    while size >= 4096 {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&filler)
            .unwrap();
        if std::io::Write::write_all(&mut file, &vec![0u8; size]).is_err() {
            size /= 2;
        }
    }
    let mut refused = None;
    for i in 0..200 {
        match store
            .create_key(
                &format!("key {i} {}", "x".repeat(50)),
                &KeyLimits::default(),
            )
            .await
        {
            Ok(_) => continue,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled up");
    eprintln!("full: {refused}");
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused:?}");
    std::fs::remove_file(&filler).unwrap();
    store
        .create_key("room again", &KeyLimits::default())
        .await
        .unwrap();
    store.ping().await.unwrap();
}

/// Writes `batches` usage batches, each retried with its id until the store
/// takes it; returns the deltas sent and how many answers were "already
/// applied" (a commit whose answer was lost, then retried).
async fn write_through_outage(
    store: Arc<dyn Store>,
    key: KeyId,
    batches: usize,
) -> (Vec<UsageDelta>, usize, usize) {
    let (mut sent, mut failures, mut already) = (Vec::new(), 0, 0);
    for b in 0..batches {
        let delta = UsageDelta {
            key_id: key.clone(),
            hour_start: 3600 * (b as i64 % 3),
            outcome: "ok".into(),
            jobs: 1,
            cpu_us: 1_000 + b as u64,
            wall_us: 2_000 + b as u64,
            peak_memory_bytes: b as u64,
        };
        let id = format!("outage-batch-{b}");
        loop {
            match store.record_usage(&id, std::slice::from_ref(&delta)).await {
                Ok(pyexec_store::Recorded::Applied) => break,
                Ok(pyexec_store::Recorded::AlreadyApplied) => {
                    already += 1;
                    break;
                }
                Err(StoreError::Unavailable(_)) => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        sent.push(delta);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (sent, failures, already)
}

async fn assert_totals(store: &dyn Store, key: &KeyId, sent: &[UsageDelta]) {
    let totals = store
        .usage(&pyexec_store::UsageFilter {
            key_id: Some(key.clone()),
            since_hour: 0,
            until_hour: None,
        })
        .await
        .unwrap();
    for hour in 0..3 {
        let of_hour: Vec<_> = sent
            .iter()
            .filter(|d| d.hour_start == 3600 * hour)
            .collect();
        let total = totals.iter().find(|t| t.hour_start == 3600 * hour).unwrap();
        assert_eq!(total.jobs, of_hour.len() as u64);
        assert_eq!(total.cpu_us, of_hour.iter().map(|d| d.cpu_us).sum::<u64>());
        assert_eq!(
            total.wall_us,
            of_hour.iter().map(|d| d.wall_us).sum::<u64>()
        );
        assert_eq!(
            total.peak_memory_bytes,
            of_hour.iter().map(|d| d.peak_memory_bytes).max().unwrap()
        );
    }
}

/// Usage written while Postgres stops (fast shutdown, mid-write) and comes
/// back: with each failed batch retried under its id, the totals equal the
/// sum of what was sent, nothing lost or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_written_through_a_postgres_restart_sums_exactly() {
    let pg = start_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, _, key) = postgres_store(&pg, dir.path()).await;
    let writer = tokio::spawn(write_through_outage(store.clone(), key.clone(), 300));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pg = in_blocking(pg, TempPostgres::stop).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pg = in_blocking(pg, TempPostgres::restart).await;
    let (sent, failures, already) = writer.await.unwrap();
    eprintln!(
        "{} batches, {failures} failed attempts, {already} answered already-applied",
        sent.len()
    );
    assert!(failures > 0, "the outage happened during the writes");
    assert_totals(&*store, &key, &sent).await;
    drop(pg);
}

/// The same with the SQLite file moved away mid-write and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_written_through_a_sqlite_outage_sums_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path().join("data"));
    let store = open(config.clone()).await.unwrap();
    let key = KeyId::parse("sqliteoutage").unwrap();
    let writer = tokio::spawn(write_through_outage(store.clone(), key.clone(), 300));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let away = dir.path().join("away.sqlite3");
    std::fs::rename(config.sqlite_path(), &away).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::rename(&away, config.sqlite_path()).unwrap();
    let (sent, failures, already) = writer.await.unwrap();
    eprintln!(
        "{} batches, {failures} failed attempts, {already} answered already-applied",
        sent.len()
    );
    assert!(failures > 0, "the outage happened during the writes");
    assert_totals(&*store, &key, &sent).await;
}
