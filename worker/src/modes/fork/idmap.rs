//! The id map of a job child's own user namespace, written from outside.
//!
//! Each fork-mode child makes a user namespace of its own (so the kernel's
//! per-user budgets are its own, see `confine.enter_fresh_sandbox`). Nothing
//! inside the jail can map its ids, and the kernel takes a map only from a
//! process of that namespace's parent (the zygote's) holding CAP_SETUID
//! there, so the server's own writes get EPERM. A helper does it: a forked
//! child of the server, single-threaded as `setns(CLONE_NEWUSER)` requires,
//! that joins the zygote's user namespace (`/proc/<zygote>/ns/user`), then
//! writes `deny` to the child's `setgroups` and the jail's one id to its
//! `gid_map` and `uid_map`. It is a `clone(CLONE_VM | CLONE_VFORK)` child
//! (no copy of the server's page tables: a plain fork cost ~1 ms of CPU)
//! that makes only async-signal-safe calls on what was prepared before (the
//! server is multi-threaded).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

use crate::error::ConfineError;
use crate::jail::process::JobProcess;

/// The files the helper writes, in order: `setgroups` must say `deny`
/// before an unprivileged `gid_map` is taken.
const FILES: [&CStr; 3] = [c"setgroups", c"gid_map", c"uid_map"];

/// The helper's steps, as its failure report names them.
const STEPS: [&str; 4] = [
    "joining the zygote's user namespace",
    "writing setgroups",
    "writing gid_map",
    "writing uid_map",
];

/// Maps the jail's one uid and gid (nsjail.cfg's `inside_id`, 1000, as the
/// zygote's own maps name it) in `child`'s own user namespace to themselves
/// in the zygote's. Blocking (two reads, a clone and a wait): run it off
/// the async threads. `child`
/// is alive and waiting for its job (it has sent its ready frame).
pub fn write(zygote: &JobProcess, child: &JobProcess) -> Result<(), ConfineError> {
    let fail = |step: &'static str, error: io::Error| ConfineError::IdMap { step, error };
    let path = format!("/proc/{}\0", child.host_pid());
    let path = CStr::from_bytes_with_nul(path.as_bytes()).expect("one nul, at the end");
    // SAFETY: open of a nul-terminated path; the result is checked.
    let dir = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return Err(fail(
            "opening the child's /proc",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    // A pid is not reused while its process lives: the child still alive
    // after the open means the directory is the child's.
    if child.has_exited() {
        return Err(fail(
            "opening the child's /proc",
            io::Error::from_raw_os_error(libc::ESRCH),
        ));
    }
    let user_ns =
        open_user_namespace(zygote).map_err(|e| fail("opening the zygote's ns/user", e))?;
    let uid = inside_id(zygote, "uid_map").map_err(|e| fail("reading the zygote's uid_map", e))?;
    let gid = inside_id(zygote, "gid_map").map_err(|e| fail("reading the zygote's gid_map", e))?;
    let (uid_map, gid_map) = (format!("{uid} {uid} 1"), format!("{gid} {gid} 1"));
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| fail("making the report pipe", e.into()))?;
    let mut args = HelperArgs {
        user_ns: user_ns.as_raw_fd(),
        child_dir: dir.as_raw_fd(),
        report: report_write.as_raw_fd(),
        contents: [b"deny", gid_map.as_bytes(), uid_map.as_bytes()],
    };
    // The helper shares the server's memory (CLONE_VM) instead of copying
    // its page tables, and the calling thread sleeps until it has exited
    // (CLONE_VFORK), so its stack and arguments outlive it.
    let mut stack = vec![0u8; HELPER_STACK];
    // SAFETY: the stack is ours until the helper exits (CLONE_VFORK), its
    // top is 16-byte aligned, and the helper makes only async-signal-safe
    // calls on what `args` holds.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(HELPER_STACK) as usize & !15;
        libc::clone(
            helper,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut args).cast(),
        )
    };
    if pid < 0 {
        return Err(fail("starting the helper", io::Error::last_os_error()));
    }
    drop(report_write);
    let status = wait(pid).map_err(|e| fail("waiting for the helper", e))?;
    let mut report = [0u8; 8];
    let got = nix::unistd::read(&report_read, &mut report).unwrap_or(0);
    if got == report.len() {
        let step = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes")) as usize;
        let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
        let step = STEPS.get(step).copied().unwrap_or("an unknown step");
        return Err(fail(step, io::Error::from_raw_os_error(errno)));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(fail(
            "the helper's exit",
            io::Error::other(format!("wait status {status:#x}")),
        ));
    }
    Ok(())
}

/// The helper's stack: it calls only a few system calls.
const HELPER_STACK: usize = 64 << 10;

/// What the helper works on, opened before it starts.
struct HelperArgs<'a> {
    /// The zygote's user namespace.
    user_ns: i32,
    child_dir: i32,
    report: i32,
    /// What goes into each of FILES.
    contents: [&'a [u8]; 3],
}

/// The helper's whole life: it never returns.
extern "C" fn helper(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `args` is the HelperArgs the parent keeps alive until we exit.
    let args = unsafe { &*(args as *const HelperArgs) };
    let give_up = |step: u32| -> ! {
        // SAFETY: errno, a write and _exit: async-signal-safe.
        unsafe {
            let errno = *libc::__errno_location();
            let mut message = [0u8; 8];
            message[..4].copy_from_slice(&step.to_ne_bytes());
            message[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(args.report, message.as_ptr().cast(), message.len());
            libc::_exit(1)
        }
    };
    // SAFETY: system calls on descriptors the parent holds open, and on
    // constants; no allocation, no lock.
    unsafe {
        if libc::setns(args.user_ns, libc::CLONE_NEWUSER) != 0 {
            give_up(0);
        }
        for (step, (file, content)) in (1u32..).zip(FILES.iter().zip(args.contents)) {
            // Opened after the setns: the kernel checks the opener's namespace.
            let fd = libc::openat(
                args.child_dir,
                file.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                give_up(step);
            }
            if libc::write(fd, content.as_ptr().cast(), content.len()) != content.len() as isize {
                give_up(step);
            }
            libc::close(fd);
        }
        libc::_exit(0)
    }
}

/// The zygote's user namespace, opened by path (a pidfd would do only from
/// Linux 5.8); the zygote still alive after the open means the path was its.
fn open_user_namespace(zygote: &JobProcess) -> io::Result<OwnedFd> {
    let file = std::fs::File::open(format!("/proc/{}/ns/user", zygote.host_pid()))?;
    if zygote.has_exited() {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(file.into())
}

/// The first id of the zygote's own map (`/proc/<pid>/uid_map` read from
/// the host: "<inside> <outside> <count>"): the jail's inside id.
fn inside_id(zygote: &JobProcess, file: &str) -> io::Result<u32> {
    let text = std::fs::read_to_string(format!("/proc/{}/{file}", zygote.host_pid()))?;
    text.split_whitespace()
        .next()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no id in {text:?}")))
}

/// The helper's wait status.
fn wait(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, with a valid status pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
}
