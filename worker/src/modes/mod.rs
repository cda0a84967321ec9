//! The two isolation modes and the worker they share: [`spawn`] (one jail
//! per worker) and [`fork`] (children of a warm zygote), both making a
//! [`sandboxed::SandboxedWorker`] that differs only in where its job
//! process's end is learned.

pub(crate) mod fork;
pub(crate) mod sandboxed;
pub(crate) mod spawn;
