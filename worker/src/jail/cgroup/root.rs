//! This server's cgroup root: found and set up once at start (v1: a
//! directory per controller; v2: controllers delegated down to it), roots of
//! servers that are gone cleared away, and every worker's cgroup made below.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::worker::JobCgroup;
use super::{empty_and_remove, CgroupLimits, CgroupMode};
use crate::error::CgroupError;

const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// v1 with CPU accounting in a hierarchy of its own (these machines). Where
/// cpuacct is mounted together with cpu, the cpu directory has its files.
const V1_WITH_CPUACCT: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];
const V2_CONTROLLERS: [&str; 1] = ["unified"];
const DELEGATED: &str = "+memory +pids +cpu";

/// This server's cgroup root, where worker cgroups are made.
#[derive(Debug)]
pub struct Cgroups {
    mode: CgroupMode,
    /// The controller of each root (v1), or `unified` (v2).
    controllers: &'static [&'static str],
    /// v1: one directory per controller; v2: one.
    roots: Vec<PathBuf>,
}

impl Cgroups {
    /// Finds the cgroup layout under `mount` and makes this server's root,
    /// removing roots left by servers that are gone. The error says what is
    /// missing and how to fix it.
    pub fn prepare(mount: &Path, parent: &str) -> Result<Self, CgroupError> {
        let instance = std::process::id().to_string();
        if mount.join("cgroup.controllers").exists() {
            prepare_v2(mount, parent, &instance)
        } else if V1_CONTROLLERS.iter().all(|c| mount.join(c).is_dir()) {
            prepare_v1(mount, parent, &instance)
        } else {
            Err(CgroupError::NoHierarchy {
                mount: mount.to_path_buf(),
            })
        }
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    #[cfg(test)]
    pub(super) fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Makes the cgroup of one worker, named `name`, with its limits.
    ///
    /// Cancel safety: if the caller gives up, a cgroup made after that is
    /// removed again, never leaked.
    pub async fn create(
        self: &Arc<Self>,
        name: String,
        limits: CgroupLimits,
    ) -> Result<JobCgroup, CgroupError> {
        let (reply, made) = tokio::sync::oneshot::channel();
        let cgroups = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(Ok(orphan)) = reply.send(cgroups.blocking_create(&name, &limits)) {
                orphan.blocking_remove();
            }
        });
        made.await
            .unwrap_or_else(|_| Err(CgroupError::Task("the cgroup task failed".into())))
    }

    fn blocking_create(&self, name: &str, limits: &CgroupLimits) -> Result<JobCgroup, CgroupError> {
        let dirs: Vec<PathBuf> = self.roots.iter().map(|r| r.join(name)).collect();
        for dir in &dirs {
            let made = match fs::create_dir(dir) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    empty_and_remove(dir);
                    fs::create_dir(dir)
                }
                other => other,
            };
            made.map_err(|source| CgroupError::Create {
                dir: dir.clone(),
                source,
            })?;
        }
        JobCgroup::blocking_make(self.mode, self.controllers, dirs, limits)
    }

    /// Removes this server's root. Call after every worker has been reaped.
    pub fn blocking_close(&self) {
        for root in &self.roots {
            empty_and_remove(root);
        }
    }
}

fn prepare_v1(mount: &Path, parent: &str, instance: &str) -> Result<Cgroups, CgroupError> {
    // cpuacct in a hierarchy of its own needs a directory of its own; mounted
    // with cpu (the same directory under two names), the cpu one serves. It
    // only measures: where it can't be used (a read-only mount) pyexec serves
    // on, and the answers' cpu_ms is null.
    let separate = |c: &str| fs::canonicalize(mount.join(c)).ok();
    let controllers: &'static [&'static str] = match (separate("cpuacct"), separate("cpu")) {
        (Some(acct), Some(cpu)) if acct != cpu => match make_dir(&acct.join(parent)) {
            Ok(()) => &V1_WITH_CPUACCT,
            Err(error) => {
                tracing::warn!(%error, "no cpuacct cgroups: jobs' CPU time will not be reported");
                &V1_CONTROLLERS
            }
        },
        _ => &V1_CONTROLLERS,
    };
    let mut roots = Vec::new();
    for controller in controllers {
        let parent_dir = mount.join(controller).join(parent);
        make_dir(&parent_dir)?;
        remove_stale_instances(&parent_dir);
        let root = parent_dir.join(instance);
        make_dir(&root)?;
        roots.push(root);
    }
    Ok(Cgroups {
        mode: CgroupMode::V1,
        controllers,
        roots,
    })
}

fn prepare_v2(mount: &Path, parent: &str, instance: &str) -> Result<Cgroups, CgroupError> {
    let offered = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    for needed in V1_CONTROLLERS {
        if !offered.split_whitespace().any(|c| c == needed) {
            return Err(CgroupError::MissingController {
                mount: mount.to_path_buf(),
                missing: needed,
                offered,
            });
        }
    }
    enable_controllers_at_top(mount, parent)?;
    let parent_dir = mount.join(parent);
    make_dir(&parent_dir)?;
    write_control(&parent_dir, "cgroup.subtree_control", DELEGATED)?;
    remove_stale_instances(&parent_dir);
    let root = parent_dir.join(instance);
    make_dir(&root)?;
    write_control(&root, "cgroup.subtree_control", DELEGATED)?;
    Ok(Cgroups {
        mode: CgroupMode::V2,
        controllers: &V2_CONTROLLERS,
        roots: vec![root],
    })
}

/// Enables the controllers for the children of the top cgroup. Outside the
/// real root (in a container), a cgroup that holds processes can't delegate
/// controllers ("no internal processes"): then this server's processes move
/// into a leaf of their own beside ours first.
fn enable_controllers_at_top(mount: &Path, parent: &str) -> Result<(), CgroupError> {
    if write_control(mount, "cgroup.subtree_control", DELEGATED).is_ok() {
        return Ok(());
    }
    let leaf = mount.join(format!("{parent}-server"));
    make_dir(&leaf)?;
    let procs = fs::read_to_string(mount.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.split_whitespace() {
        // A process may be gone already, or be a kernel thread: skip it.
        let _ = fs::write(leaf.join("cgroup.procs"), pid);
    }
    write_control(mount, "cgroup.subtree_control", DELEGATED)
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => Err(CgroupError::ReadOnly {
            dir: dir.to_path_buf(),
        }),
        Err(source) => Err(CgroupError::Create {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

fn write_control(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let file = dir.join(file);
    fs::write(&file, value).map_err(|source| CgroupError::Write {
        file,
        value: value.into(),
        source,
    })
}

/// Removes the roots of servers that no longer run (a crash or a kill -9 can
/// leave them), with anything still inside.
fn remove_stale_instances(parent_dir: &Path) {
    let Ok(entries) = fs::read_dir(parent_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            empty_and_remove(&entry.path());
        }
    }
}
