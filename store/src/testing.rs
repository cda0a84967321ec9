//! A throwaway Postgres for tests: a fresh cluster of Debian's Postgres 15
//! in a temporary directory, run as the unprivileged `postgres` user when
//! the tests run as root (as the current user otherwise), listening on
//! 127.0.0.1 and on a Unix socket in the directory, stopped by its pid,
//! killed and removed on drop. Every failure panics with the server's log:
//! this is test support.
//!
//! Roles: the superuser `postgres` (trusted over the socket only, for
//! [`TempPostgres::psql`] and [`TempPostgres::dump`]) and `pyexec`, a
//! password-authenticated (SCRAM) owner of the database `pyexec`, which is
//! what [`TempPostgres::url`] connects as.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

const BIN: &str = "/usr/lib/postgresql/15/bin";
const READY_WITHIN: Duration = Duration::from_secs(60);
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A running (or stopped) throwaway Postgres cluster.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    tls: bool,
    owner: Option<(u32, u32)>,
    server: Option<Child>,
}

impl TempPostgres {
    /// A new cluster, started, with the `pyexec` role and database.
    pub fn start() -> TempPostgres {
        TempPostgres::make(false)
    }

    /// Like [`TempPostgres::start`], with TLS required on TCP (plain-text
    /// TCP connections are rejected): the server's certificate, for
    /// `localhost` and `127.0.0.1`, is signed by the CA in [`TempPostgres::ca_file`].
    pub fn start_with_tls() -> TempPostgres {
        TempPostgres::make(true)
    }

    fn make(tls: bool) -> TempPostgres {
        assert!(
            Path::new(BIN).join("postgres").exists(),
            "{BIN}/postgres is missing: install Debian's postgresql (scripts/setup.sh)"
        );
        let dir = tempfile::Builder::new()
            .prefix("pyexec-pg-")
            .tempdir()
            .expect("a temporary directory");
        // Root runs the cluster as `postgres` (Postgres refuses to run as root).
        let owner = nix::unistd::geteuid().is_root().then(|| {
            let user = User::from_name("postgres")
                .ok()
                .flatten()
                .expect("the `postgres` system user (Debian's postgresql package makes it)");
            (user.uid.as_raw(), user.gid.as_raw())
        });
        let mut pg = TempPostgres {
            port: free_port(),
            password: random_hex(),
            tls,
            owner,
            server: None,
            dir,
        };
        fs::create_dir_all(pg.socket_dir()).expect("the socket directory");
        pg.give(pg.dir.path());
        pg.give(&pg.dir.path().join("cloudsql"));
        pg.give(&pg.socket_dir());
        pg.initdb();
        if tls {
            pg.make_certificates();
        }
        // The port was free when picked; another process may take it first.
        let mut attempts = 0;
        while let Err(why) = pg.launch() {
            attempts += 1;
            assert!(attempts < 3, "{why}\n{}", pg.log_tail());
            pg.port = free_port();
        }
        pg.psql_in(
            "postgres",
            &format!("CREATE ROLE pyexec LOGIN PASSWORD '{}'", pg.password),
        );
        pg.create_database("pyexec");
        pg
    }

    /// `postgres://pyexec:PASSWORD@127.0.0.1:PORT/pyexec`.
    pub fn url(&self) -> String {
        self.url_of("pyexec")
    }

    /// The URL of another database of this cluster (see [`TempPostgres::create_database`]).
    pub fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://pyexec:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// A libpq key/value string reaching the `pyexec` database through the
    /// Unix socket, whose directory is named like Cloud SQL's
    /// (`…/cloudsql/project:region:instance`).
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=pyexec password={} dbname=pyexec",
            self.socket_dir().display(),
            self.port,
            self.password
        )
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("cloudsql")
            .join("project:region:instance")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `pyexec` role's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The CA that signed the server's certificate (TLS clusters only).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// The postmaster's pid while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// A new empty database owned by `pyexec`; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql_in(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" OWNER pyexec"),
        );
        self.url_of(name)
    }

    /// Runs `sql` as the superuser in the `pyexec` database; returns psql's
    /// unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("pyexec", sql)
    }

    /// Runs `sql` as the superuser in `database`.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pg_dump` of the `pyexec` database, as plain SQL.
    pub fn dump(&self) -> Vec<u8> {
        let out = Command::new(Path::new(BIN).join("pg_dump"))
            .args(["-U", "postgres", "-d", "pyexec", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string()])
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Stops the server the way an operator would (fast shutdown: SIGINT to
    /// the postmaster, which disconnects every client) and waits for it to
    /// exit. (SIGTERM is Postgres's "smart" shutdown, which would wait for
    /// the pooled connections of the store under test to go away.)
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            signal(&server, Signal::SIGINT);
            if !wait_for_exit(&mut server, STOP_WITHIN) {
                signal(&server, Signal::SIGKILL);
                let _ = server.wait();
                panic!(
                    "postgres did not stop within {STOP_WITHIN:?}\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// Starts the stopped server again, on the same data and port.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "the server is running");
        if let Err(why) = self.launch() {
            panic!("{why}\n{}", self.log_tail());
        }
    }

    /// Freezes every process of the cluster (SIGSTOP): connections stay
    /// open and nothing answers, like a database host that hangs.
    pub fn freeze(&self) {
        self.signal_cluster(Signal::SIGSTOP);
    }

    /// Undoes [`TempPostgres::freeze`].
    pub fn thaw(&self) {
        self.signal_cluster(Signal::SIGCONT);
    }

    fn signal_cluster(&self, sig: Signal) {
        let Some(postmaster) = self.pid() else { return };
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- postgres.log (tail) ---\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Hands `path` to the user the cluster runs as.
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).expect("chmod");
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(Path::new(BIN).join(program));
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command.current_dir(self.dir.path()).env_remove("PGDATA");
        command
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--auth=trust",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tcp = if self.tls {
            "hostnossl all all 0.0.0.0/0 reject\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        } else {
            "host all all 127.0.0.1/32 scram-sha-256\n"
        };
        let hba = format!("local all postgres trust\nlocal all all scram-sha-256\n{tcp}");
        let hba_path = self.data_dir().join("pg_hba.conf");
        fs::write(&hba_path, hba).expect("write pg_hba.conf");
        self.give_file(&hba_path);
    }

    fn give_file(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    fn make_certificates(&self) {
        let dir = self.dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3",
            "-subj",
            "/CN=pyexec test CA",
        ]);
        openssl(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&csr);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3",
            "-extfile",
            "server.ext",
        ]);
        self.give_file(&dir.join("server.key"));
        self.give_file(&dir.join("server.pem"));
        fs::set_permissions(dir.join("ca.pem"), fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    /// Starts the server and waits until it accepts connections; `Err` if it
    /// exits first (e.g. its port was taken meanwhile).
    fn launch(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("open postgres.log");
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir().display()
            ))
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=16MB"]);
        if self.tls {
            command
                .args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    self.dir.path().join("server.pem").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    self.dir.path().join("server.key").display()
                ));
        }
        let server = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.server = Some(server);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ready = Command::new(Path::new(BIN).join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if let Some(server) = self.server.as_mut() {
                if let Ok(Some(status)) = server.try_wait() {
                    self.server = None;
                    return Err(format!("postgres exited at start ({status})"));
                }
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready within {READY_WITHIN:?}\n{}",
                self.log_tail()
            );
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // A frozen cluster must run again to obey.
        self.thaw();
        if let Some(mut server) = self.server.take() {
            // Immediate shutdown: the postmaster takes its children down.
            signal(&server, Signal::SIGQUIT);
            if !wait_for_exit(&mut server, Duration::from_secs(10)) {
                signal(&server, Signal::SIGKILL);
                let _ = server.wait();
            }
        }
    }
}

fn signal(child: &Child, sig: Signal) {
    let _ = kill(Pid::from_raw(child.id() as i32), sig);
}

fn wait_for_exit(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    false
}

/// The pids whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name may hold spaces: fields resume after ')'.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// A port free right now on 127.0.0.1 (the kernel's choice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn random_hex() -> String {
    crate::random::bytes::<16>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
