//! The store behind the keys' tests: the embedded SQLite file (a temporary
//! data directory) or a throwaway Postgres cluster, chosen by
//! `PYEXEC_TEST_STORE` (`embedded`, the default, or `postgres`), so that
//! the same end-to-end tests run against each backend. Also `pyexec keys`
//! run against it, as an operator would.

use std::path::Path;
use std::process::Command;

use pyexec_store::testing::TempPostgres;
use serde_json::Value;

pub enum TestStore {
    Embedded(tempfile::TempDir),
    Postgres {
        cluster: TempPostgres,
        /// The servers' data directory, unused by the store but set.
        data_dir: tempfile::TempDir,
    },
}

impl TestStore {
    /// The backend `PYEXEC_TEST_STORE` names.
    pub fn new() -> TestStore {
        match std::env::var("PYEXEC_TEST_STORE").as_deref() {
            Ok("postgres") => TestStore::postgres(),
            _ => TestStore::Embedded(tempfile::tempdir().expect("a data dir")),
        }
    }

    pub fn postgres() -> TestStore {
        TestStore::Postgres {
            cluster: TempPostgres::start(),
            data_dir: tempfile::tempdir().expect("a data dir"),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestStore::Postgres { .. })
    }

    pub fn data_dir(&self) -> &Path {
        match self {
            TestStore::Embedded(dir) => dir.path(),
            TestStore::Postgres { data_dir, .. } => data_dir.path(),
        }
    }

    pub fn cluster(&mut self) -> Option<&mut TempPostgres> {
        match self {
            TestStore::Postgres { cluster, .. } => Some(cluster),
            TestStore::Embedded(_) => None,
        }
    }

    /// The environment a server or `pyexec keys` needs to use this store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PYEXEC_DATA_DIR", self.data_dir().display().to_string())];
        if let TestStore::Postgres { cluster, .. } = self {
            env.push(("PYEXEC_DATABASE_URL", cluster.url()));
        }
        env
    }

    /// Everything the store holds, as bytes: the SQLite files, or a dump.
    pub fn raw_contents(&self) -> Vec<u8> {
        match self {
            TestStore::Embedded(dir) => {
                let mut bytes = Vec::new();
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
                }
                bytes
            }
            TestStore::Postgres { cluster, .. } => cluster.dump(),
        }
    }

    /// `pyexec keys <args>` against this store; its stdout.
    pub fn keys(&self, args: &[&str]) -> String {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pyexec"));
        command
            .arg("keys")
            .args(args)
            .env_remove("PYEXEC_DATABASE_URL");
        for (name, value) in self.env() {
            command.env(name, value);
        }
        let output = command.output().expect("run pyexec keys");
        assert!(
            output.status.success(),
            "pyexec keys {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// A new key with these limit flags: (id, token).
    pub fn new_key(&self, name: &str, limits: &[&str]) -> (String, String) {
        let mut args = vec!["create", "--name", name, "--json"];
        args.extend_from_slice(limits);
        let made: Value = serde_json::from_str(self.keys(&args).trim()).unwrap();
        (
            made["id"].as_str().unwrap().to_string(),
            made["token"].as_str().unwrap().to_string(),
        )
    }

    /// The usage rows of key `id` (`pyexec keys usage --json`).
    pub fn usage_rows(&self, id: &str) -> Vec<Value> {
        serde_json::from_str(self.keys(&["usage", id, "--since", "2d", "--json"]).trim()).unwrap()
    }
}
