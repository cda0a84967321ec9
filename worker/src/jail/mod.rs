//! Making jails: nsjail's command line and its launch from one long-lived
//! thread ([`nsjail`], [`launcher`]), what nsjail logs ([`log`]), each
//! worker's cgroup ([`cgroup`]) and a job's first process held by a pidfd
//! ([`process`]). Nothing here knows what runs inside.

pub(crate) mod cgroup;
pub(crate) mod launcher;
mod log;
pub(crate) mod nsjail;
pub(crate) mod process;

pub use cgroup::CgroupMode;
pub use nsjail::{NsjailConfig, SandboxLimits};
