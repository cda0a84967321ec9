//! A job's init process, held by a pidfd so that stopping a job can never
//! signal a stranger that inherited a recycled pid.
//!
//! Both isolation modes make the job's first process PID 1 of a pid
//! namespace of its own (spawn: nsjail's jailed child; fork: the zygote's
//! child), so killing it kills every process the script started: the kernel
//! SIGKILLs the rest of a namespace when its init dies. Its host pid comes
//! from the credentials on its "ready" frame (see `job::channel`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

#[derive(Debug)]
pub struct JobProcess {
    host_pid: i32,
    pidfd: OwnedFd,
}

impl JobProcess {
    /// Opens a pidfd for `host_pid`. Called while the process is known to be
    /// alive and waiting (it has just sent its ready frame and blocks until
    /// its job comes), so the pid cannot have been recycled yet.
    pub fn open(host_pid: i32) -> io::Result<JobProcess> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, host_pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(JobProcess { host_pid, pidfd })
    }

    /// The process id in the server's pid namespace.
    pub fn host_pid(&self) -> i32 {
        self.host_pid
    }

    /// The pidfd, borrowed (`try_clone_to_owned` for one that outlives it).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The pidfd itself, for reading its fdinfo.
    pub fn raw_pidfd(&self) -> i32 {
        self.pidfd.as_raw_fd()
    }

    /// SIGKILL, at once. Harmless if it has exited already.
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal(pidfd, sig, info = NULL, flags = 0).
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }

    /// True once the process has exited (a pidfd polls readable then), even
    /// if it is not our child and someone else reaps it.
    pub fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_child_is_seen_to_have_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let process = JobProcess::open(child.id() as i32).unwrap();
        assert!(!process.has_exited());
        process.kill();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(process.has_exited());
        // A second kill after the pid is gone signals no one.
        process.kill();
    }
}
