//! pyexec's workers: warm Python interpreters, each in its own nsjail, each
//! running exactly one job. No HTTP here and no metrics: the server drives the
//! [`Pool`] and listens to it through a [`PoolObserver`].
//!
//! - [`protocol`]: the messages between the server and the in-jail runner.
//! - [`codec`]: length-delimited JSON frames with a size cap.
//! - [`job`]: a job, its result, its output, and why it can fail.
//! - [`sandbox`]: the `Sandbox`/`Worker` traits the pool is written against.
//! - [`nsjail`]: the real sandbox: launching nsjail with the runner inside.
//! - [`cgroup`]: per-worker cgroups (v1 and v2) for memory, processes and CPU.
//! - [`capture`]: reading a job's stdout/stderr pipes under a cap.
//! - [`pool`]: the warm pool, its FIFO queue and the RAII [`Lease`].

pub mod capture;
pub mod cgroup;
pub mod codec;
pub mod job;
pub mod nsjail;
pub mod observer;
pub mod pool;
pub mod protocol;
pub mod sandbox;
pub mod selfcheck;

pub use job::{Captured, Job, JobFailure, JobReport};
pub use observer::{NoObserver, PoolObserver};
pub use pool::{CheckoutError, Lease, Pool, PoolConfig, PoolStatus};
pub use protocol::{ScriptError, ScriptErrorKind, Versions};
pub use sandbox::{Sandbox, SpawnError, Worker};
