//! The jail policy, property by property, proven through the real launcher:
//! each test drives the real `SpawnSandbox` or `ForkSandbox` (the server's
//! configuration, or a copy with one wall removed) through the `Worker`
//! interface, runs a probe script from `worker/tests/probes/` as a real job,
//! reads what it printed, and reads from outside (`/proc/<pid>/status`, the
//! worker's cgroup files) what the host sees. Nothing a probe does sends a
//! packet off this machine, even in a broken jail.
//!
//! One module per section: basics, network, filesystem, seccomp, rlimits,
//! cgroups, exits, budgets; then what only fork mode has to prove (`fork_only`). One
//! test per mode (`spawn_mode`, `fork_mode`) runs every section in turn on
//! one sandbox of the server's configuration (fork mode: one zygote, as the
//! server has), plus the sandboxes a control needs. Each property is one
//! line, `PASS  [mode/section] property (what was seen)`, printed as it is
//! checked (`--nocapture` shows them); a test fails listing every property
//! that did not hold. `PYEXEC_JAIL_SECTIONS=seccomp,cgroups` runs only those
//! sections.
//!
//! Run as root (namespaces, cgroups), with /opt/pyexec from
//! `scripts/setup.sh`: `make test-jail`. Every wait is an upper bound
//! stretched by `PYEXEC_TEST_TIME_SCALE`.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod basics;
mod budgets;
mod cgroups;
mod exits;
mod filesystem;
mod fork_only;
mod network;
mod rlimits;
mod seccomp;

use harness::{is_fork, Checks, Fork, Jail, Kind, Spawn};

#[tokio::test]
async fn spawn_mode() {
    every_section::<Spawn>().await;
}

#[tokio::test]
async fn fork_mode() {
    every_section::<Fork>().await;
}

async fn every_section<K: Kind>() {
    let mut checks = Checks::new::<K>();
    let jail = Jail::<K>::standard("policy").await;
    if wanted("basics") {
        basics::basics(&jail, &mut checks).await;
    }
    if wanted("network") {
        network::network(&jail, &mut checks).await;
    }
    if wanted("filesystem") {
        filesystem::filesystem(&jail, &mut checks).await;
    }
    if wanted("seccomp") {
        seccomp::seccomp(&jail, &mut checks).await;
    }
    if wanted("rlimits") {
        rlimits::rlimits(&jail, &mut checks).await;
    }
    if wanted("cgroups") {
        cgroups::cgroups(&jail, &mut checks).await;
    }
    if wanted("exits") {
        exits::exits(&jail, &mut checks).await;
    }
    if wanted("budgets") {
        budgets::budgets(&jail, &mut checks).await;
    }
    if is_fork::<K>() && wanted("fork_only") {
        fork_only::fork_only(&jail, &mut checks).await;
    }
    jail.close().await;
    checks.finish();
}

/// Whether `PYEXEC_JAIL_SECTIONS` (a comma-separated list; all if unset)
/// names `section`.
fn wanted(section: &str) -> bool {
    std::env::var("PYEXEC_JAIL_SECTIONS")
        .map_or(true, |list| list.split(',').any(|s| s.trim() == section))
}
