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
//! - [`protocol`], [`codec`]: the messages between the server and the
//!   runner, as length-delimited JSON frames with a size cap.
//! - [`job`]: a job, its result, its output, and why it can fail.
//! - [`sandbox`]: the `Sandbox`/`Worker` traits the pool is written against.
//! - [`sandboxed`]: a worker of either mode, and where its exit is learned.
//! - [`channel`]: the server's end of one job process.
//! - [`spawn`], [`fork`]: the two isolation modes.
//! - [`nsjail`], [`launcher`]: starting jails, from one long-lived thread.
//! - [`cgroup`]: per-worker cgroups (v1 and v2) for memory, processes and
//!   CPU, and what each job used.
//! - [`process`]: a job's init process held by a pidfd.
//! - [`capture`]: reading a job's stdout/stderr pipes under a cap.
//! - [`selfcheck`]: the start-up proof of every wall.
//! - [`pool`]: the warm pool, its FIFO queue and the RAII [`Lease`].

pub mod capture;
pub mod cgroup;
pub mod channel;
pub mod codec;
pub mod fork;
pub mod job;
pub mod launcher;
pub mod nsjail;
pub mod observer;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod sandbox;
pub mod sandboxed;
pub mod selfcheck;
pub mod spawn;

pub use job::{Captured, FileCaps, Job, JobFailure, JobLimits, JobReport, JobResult, Usage};
pub use observer::{NoObserver, PoolObserver};
pub use pool::{CheckoutError, Lease, Pool, PoolConfig, PoolStatus};
pub use protocol::{OutputFile, OutputFiles, ScriptError, ScriptErrorKind, Versions};
pub use sandbox::{Sandbox, SpawnError, Worker};
