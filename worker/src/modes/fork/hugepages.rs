//! The zygote's anonymous memory in transparent huge pages: the server asks
//! the kernel to collapse it (`process_madvise(MADV_COLLAPSE)`), so that
//! each fork copies, and each child's exit frees, one page-table entry per
//! 2 MiB of it instead of 512.
//!
//! Why from the server: the jail has no /proc, so the zygote can't list its
//! own mappings; the server reads `/proc/<pid>/maps` and advises through the
//! zygote's pidfd. A child's first write to a huge page splits it in the
//! child only and copies 4 KiB, as before; the zygote's own writes split its
//! pages too, so the collapse is repeated every [`RECOLLAPSE_EVERY`] forks.
//! Measured in docs/performance.md ("Cuts tried"). Best effort: a kernel
//! without MADV_COLLAPSE (before 6.1) or without THP leaves the zygote as it
//! was, which is only slower.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;

/// A PMD's worth of memory with 4 KiB pages (x86-64, arm64).
const HUGE_PAGE: u64 = 2 << 20;
/// <linux/mman.h>; not every libc crate version names it.
const MADV_COLLAPSE: libc::c_int = 25;
/// Forks between two collapses of a zygote: a re-collapse of the few pages
/// the zygote split meanwhile took ~6 ms, the first ~50 ms.
pub const RECOLLAPSE_EVERY: u64 = 256;

/// Whether a zygote's memory is collapsed into huge pages
/// (`PYEXEC_ZYGOTE_PAGES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZygotePages {
    /// Collapsed at start and every [`RECOLLAPSE_EVERY`] forks.
    Huge,
    /// Left as the allocator made it (4 KiB pages).
    Small,
}

/// What one collapse did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collapsed {
    /// 2 MiB-aligned ranges the kernel collapsed (or found already huge).
    pub ranges: usize,
    pub bytes: u64,
    /// Ranges it refused (pages locked or busy, no memory for a huge page).
    pub refused: usize,
}

/// The 2 MiB-aligned parts of the private, writable, anonymous mappings
/// (the heap included, the stack not) in a `/proc/<pid>/maps` text.
pub fn collapsible_ranges(maps: &str) -> Vec<(u64, u64)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let inode = fields.nth(2)?;
            let name = fields.next().unwrap_or("");
            let anonymous = inode == "0" && (name.is_empty() || name == "[heap]");
            if perms != "rw-p" || !anonymous {
                return None;
            }
            let (low, high) = range.split_once('-')?;
            let low = u64::from_str_radix(low, 16).ok()?;
            let high = u64::from_str_radix(high, 16).ok()?;
            let start = low.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            let end = high / HUGE_PAGE * HUGE_PAGE;
            (end > start).then_some((start, end))
        })
        .collect()
}

/// Collapses the anonymous memory of the process `pidfd` holds (`host_pid`
/// names it in /proc). Blocking: reads /proc and waits for the kernel's
/// copies. Fails only if no range could be advised at all.
pub fn collapse(host_pid: i32, pidfd: &OwnedFd) -> io::Result<Collapsed> {
    let maps = std::fs::read_to_string(format!("/proc/{host_pid}/maps"))?;
    let mut done = Collapsed::default();
    let mut last_error = None;
    for (start, end) in collapsible_ranges(&maps) {
        let iov = libc::iovec {
            iov_base: start as *mut libc::c_void,
            iov_len: (end - start) as usize,
        };
        // SAFETY: the kernel reads one iovec from our memory; the range it
        // names is the target's address space, never dereferenced here.
        let advised = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd.as_raw_fd(),
                &iov as *const libc::iovec,
                1usize,
                MADV_COLLAPSE,
                0u32,
            )
        };
        if advised < 0 {
            done.refused += 1;
            last_error = Some(io::Error::last_os_error());
        } else {
            done.ranges += 1;
            done.bytes += advised as u64;
        }
    }
    match last_error {
        Some(e) if done.ranges == 0 => Err(e),
        _ => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_aligned_inner_part_of_anonymous_writable_private_mappings() {
        let maps = "\
55d0c0000000-55d0c0a00000 rw-p 00000000 00:00 0                          [heap]
7f0000100000-7f0000500000 rw-p 00000000 00:00 0 
7f0000600000-7f0000700000 rw-p 00000000 00:00 0 
7f0000800000-7f0000c00000 r--p 00000000 00:00 0 
7f0001000000-7f0001400000 rw-p 00001000 08:01 1234                       /usr/lib/libpython3.11.so
7f0002000000-7f0002400000 rw-s 00000000 00:01 77                         /dev/shm/x
7ffd00000000-7ffd00400000 rw-p 00000000 00:00 0                          [stack]
";
        assert_eq!(
            collapsible_ranges(maps),
            vec![
                // the heap: 10 MiB, aligned at both ends
                (0x55d0c0000000, 0x55d0c0a00000),
                // 1 MiB .. 5 MiB: only 2 MiB .. 4 MiB is whole huge pages
                (0x7f0000200000, 0x7f0000400000),
            ]
        );
    }

    #[test]
    fn a_process_that_is_gone_is_an_error() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let process = crate::jail::process::JobProcess::open(child.id() as i32).unwrap();
        let pidfd = process.pidfd().try_clone_to_owned().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(collapse(process.host_pid(), &pidfd).is_err());
    }
}
