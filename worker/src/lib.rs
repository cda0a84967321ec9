//! pyexec's workers: warm Python interpreters, each sandboxed by nsjail,
//! each running exactly one job. No HTTP here and no metrics: the server
//! drives the [`Pool`] and listens to it through a [`PoolObserver`].
//!
//! ```text
//!  Pool ──spawn──▶ Sandbox ── SpawnSandbox: a jail per worker (spawn)
//!   │                      └─ ForkSandbox:  a child of a warm zygote (fork)
//!   └─ Lease ─run─▶ Worker ── JobChannel: job socket + captured stdout/stderr
//! ```
//!
//! The rooms, each knowing only those below it:
//!
//! - `pool/`: the warm pool, its fair queue and the RAII [`Lease`].
//! - `modes/`: the two isolation modes (`spawn`, `fork` with its zygote),
//!   and the worker type both share (`sandboxed`).
//! - `selfcheck/`: the start-up proof of every wall, through a [`Sandbox`].
//! - `jail/`: starting nsjail (from one long-lived launcher thread), the
//!   per-worker cgroups and the job's process held by a pidfd.
//! - `job/`: a job and its outcome, the messages to and from the runner,
//!   their framing, the job channel and the capture of stdout/stderr.
//! - `phases`: the time each phase of a worker's life took, for the server.
//! - `sandbox`, `error`, `observer`: the seams the pool and the server are
//!   written against ([`Sandbox`], [`Worker`], [`SpawnError`], [`PoolObserver`]).

mod error;
mod jail;
mod job;
mod modes;
mod observer;
mod phases;
mod pool;
mod sandbox;
mod selfcheck;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use error::{
    CgroupError, ConfineError, ForkError, HandshakeError, ProtocolViolation, SandboxFault,
    SetupError, SpawnError, SpawnFailure, Unready, ZygoteError, ZygoteNotReady,
};
pub use jail::{CgroupMode, NsjailConfig, SandboxLimits};
pub use job::channel::max_answer_frame;
pub use job::protocol::{OutputFile, OutputFiles, ScriptError, ScriptErrorKind, Versions};
pub use job::{Captured, FileCaps, Job, JobFailure, JobLimits, JobReport, JobResult, Usage};
pub use modes::fork::{
    ForkSandbox, NoZygoteObserver, Recycling, ZygoteLoad, ZygoteObserver, ZygotePages, ZygoteRoom,
};
pub use modes::spawn::SpawnSandbox;
pub use observer::{NoObserver, PoolObserver};
pub use phases::{Phase, PhaseObserver};
pub use pool::{Caller, CheckoutError, Lease, Pool, PoolConfig, PoolStatus};
pub use sandbox::{Sandbox, SelfCheckReport, Worker};
