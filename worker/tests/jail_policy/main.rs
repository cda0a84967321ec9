//! The jail policy, property by property, proven through the real launcher:
//! each test drives the real `SpawnSandbox` or `ForkSandbox` (the server's
//! configuration, or a copy with one wall removed) through the `Worker`
//! interface, runs a probe script from `worker/tests/probes/` as a real job,
//! reads what it printed, and reads from outside (`/proc/<pid>/status`, the
//! worker's cgroup files) what the host sees. Nothing a probe does sends a
//! packet off this machine, even in a broken jail.
//!
//! One module per section, each tested in both modes (`<section>::spawn_mode`,
//! `<section>::fork_mode`): basics, network, filesystem, seccomp, rlimits,
//! cgroups, exits; then what only fork mode has to prove (`fork_only`). Each
//! property is one line, `PASS  [mode] property (what was seen)`, printed as
//! it is checked (`--nocapture` shows them); a test fails listing every
//! property that did not hold.
//!
//! Run as root (namespaces, cgroups), with /opt/pyexec from
//! `scripts/setup.sh`: `make test-jail`. Every wait is an upper bound
//! stretched by `PYEXEC_TEST_TIME_SCALE`.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod basics;
mod cgroups;
mod exits;
mod filesystem;
mod fork_only;
mod network;
mod rlimits;
mod seccomp;
