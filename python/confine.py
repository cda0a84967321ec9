"""The walls a job process builds around itself before any script runs.

Both isolation modes end in `seal()`, so every script runs behind the same
filter whatever made its process:

- spawn mode: the runner, a fresh interpreter in a jail of its own, calls
  `seal()` once it is warm, before it reports ready;
- fork mode: each job child of the zygote first calls `enter_fresh_sandbox()`
  (own pid, mount, ipc and network namespaces, and a user namespace when the
  zygote is told to make one; a new session, fresh tmpfs /tmp and /dev/shm),
  then `seal()`.

What `seal()` adds on top of the jail's own policy (nsjail.cfg):
- no capabilities left, not even in the jail's user namespace (the fork-mode
  zygote keeps CAP_SYS_ADMIN there to build each child's namespaces);
- no_new_privs;
- the job's own budgets of the kernel's per-user counters (JOB_RLIMITS);
- the job's seccomp filter: an allow-list. Only the system calls of POLICY's
  ALLOWED groups pass, some with their arguments checked (RULES); the rest is
  refused. The list was measured, not guessed: scripts/trace-syscalls.sh
  traces the whole runtime (python/syscall_trace.json) and test_syscalls.py
  fails when a traced call is refused. docs/syscall-filter.md is its table.

How a refusal answers (the errno a caller sees):
- EPERM for the calls that change namespaces, mounts, identity or the
  machine, or reach into other processes or kernel subsystems a job never
  needs (REFUSED): an unprivileged caller gets EPERM from the kernel too;
- the calls the jail policy refuses itself (DEFERRED: ptrace, bpf, ...) are
  answered SECCOMP_RET_TRACE, which ranks below the jail policy's ERRNO: with
  the jail policy beneath, its EPERM is the answer; alone, the call fails
  with ENOSYS (no tracer asks for seccomp events). Each wall refuses them on
  its own, and a job can tell both walls are there (the self-check does);
- ENOSYS for everything else, the calls of newer kernels above all: that is
  what a kernel without the call says, so glibc and Python fall back (clone3
  -> clone) and code probing for an optional feature moves on;
- for a narrowed call, what the kernel says of an argument it does not
  support: EAFNOSUPPORT for a socket family, ENOTTY for an ioctl request,
  EINVAL for a prctl option or fcntl command; EPERM for clone with a
  namespace flag and for personality changes.
The x32 ABI gets EPERM; a foreign architecture is killed.

Stdlib only (ctypes), x86_64 Linux only: the syscall numbers below are that
ABI's. Every failure raises OSError; the callers refuse to run a job then.
"""

import ctypes
import errno
import fcntl
import os
import resource
import socket
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEW_ANY = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
                 | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)

# <linux/mount.h>
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_REC, MS_PRIVATE = 0x4000, 0x40000

# <linux/prctl.h>, <linux/seccomp.h>, <linux/capability.h>
PR_SET_NAME, PR_GET_NAME = 15, 16
PR_GET_SECCOMP = 21
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 38, 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# ------------------------------------------------------------------ the policy

# x86_64 numbers of every call the policy names (test_syscalls.py checks them
# against python/syscall_table.py, itself checked against the kernel headers).
NUMBERS = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6,
    "poll": 7, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
    "rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16,
    "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "pipe": 22,
    "select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "madvise": 28,
    "shmget": 29, "shmat": 30, "shmctl": 31, "dup": 32, "dup2": 33, "nanosleep": 35,
    "getitimer": 36, "alarm": 37, "setitimer": 38, "getpid": 39, "sendfile": 40,
    "socket": 41, "connect": 42, "accept": 43, "sendto": 44, "recvfrom": 45,
    "sendmsg": 46, "recvmsg": 47, "shutdown": 48, "bind": 49, "listen": 50,
    "getsockname": 51, "getpeername": 52, "socketpair": 53, "setsockopt": 54,
    "getsockopt": 55, "clone": 56, "vfork": 58, "execve": 59, "exit": 60, "wait4": 61,
    "kill": 62, "uname": 63, "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67,
    "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "fcntl": 72, "flock": 73,
    "fsync": 74, "fdatasync": 75, "truncate": 76, "ftruncate": 77, "getcwd": 79,
    "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84, "link": 86,
    "unlink": 87, "symlink": 88, "readlink": 89, "chmod": 90, "fchmod": 91, "umask": 95,
    "getrlimit": 97, "getrusage": 98, "sysinfo": 99, "times": 100, "ptrace": 101,
    "getuid": 102, "syslog": 103, "getgid": 104, "setuid": 105, "setgid": 106,
    "geteuid": 107, "getegid": 108, "setpgid": 109, "getppid": 110, "getpgrp": 111,
    "setsid": 112, "setreuid": 113, "setregid": 114, "getgroups": 115, "setgroups": 116,
    "setresuid": 117, "getresuid": 118, "setresgid": 119, "getresgid": 120,
    "getpgid": 121, "setfsuid": 122, "setfsgid": 123, "getsid": 124, "capget": 125,
    "capset": 126, "rt_sigpending": 127, "rt_sigtimedwait": 128, "rt_sigqueueinfo": 129,
    "rt_sigsuspend": 130, "sigaltstack": 131, "mknod": 133, "personality": 135,
    "statfs": 137, "fstatfs": 138, "getpriority": 140, "setpriority": 141,
    "vhangup": 153, "modify_ldt": 154, "pivot_root": 155, "prctl": 157,
    "arch_prctl": 158, "adjtimex": 159, "setrlimit": 160, "chroot": 161, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "gettid": 186,
    "getxattr": 191, "lgetxattr": 192, "fgetxattr": 193, "listxattr": 194,
    "llistxattr": 195, "flistxattr": 196, "futex": 202, "sched_getaffinity": 204,
    "io_setup": 206, "io_destroy": 207, "io_getevents": 208, "io_submit": 209,
    "io_cancel": 210, "lookup_dcookie": 212, "getdents64": 217, "set_tid_address": 218,
    "restart_syscall": 219, "semtimedop": 220, "fadvise64": 221, "clock_settime": 227,
    "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230, "exit_group": 231,
    "epoll_wait": 232, "epoll_ctl": 233, "tgkill": 234, "mbind": 237, "mq_open": 240,
    "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244,
    "mq_getsetattr": 245, "kexec_load": 246, "waitid": 247, "add_key": 248,
    "request_key": 249, "keyctl": 250, "inotify_init": 253, "inotify_add_watch": 254,
    "inotify_rm_watch": 255, "openat": 257, "mkdirat": 258, "mknodat": 259,
    "newfstatat": 262, "unlinkat": 263, "renameat": 264, "linkat": 265, "symlinkat": 266,
    "readlinkat": 267, "fchmodat": 268, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "unshare": 272, "set_robust_list": 273, "get_robust_list": 274, "utimensat": 280,
    "epoll_pwait": 281, "fallocate": 285, "accept4": 288, "eventfd2": 290,
    "epoll_create1": 291, "dup3": 292, "pipe2": 293, "inotify_init1": 294,
    "rt_tgsigqueueinfo": 297, "perf_event_open": 298, "fanotify_init": 300,
    "fanotify_mark": 301, "prlimit64": 302, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "renameat2": 316,
    "getrandom": 318, "memfd_create": 319, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "copy_file_range": 326, "statx": 332, "io_pgetevents": 333,
    "rseq": 334, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "pidfd_open": 434, "clone3": 435, "close_range": 436,
    "pidfd_getfd": 438, "faccessat2": 439, "process_madvise": 440, "mount_setattr": 442,
    "quotactl_fd": 443, "process_mrelease": 448, "statmount": 457, "listmount": 458,
    "open_tree_attr": 467, "listns": 470,
    "seccomp": 317,  # not in the policy (so ENOSYS): install_program makes it unfiltered
}

# What a job may call, by group, each with why. Traced (syscall_trace.json)
# unless the reason says otherwise; a call's "twin" is the same operation in
# another form (a path or a descriptor, an *at variant, an older number).
ALLOWED = (
    ("memory: the allocator, mapped files, numpy's large arrays and its NUMA hint",
     ("brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mbind")),
    ("reading and writing descriptors the job holds, and their twins",
     ("read", "write", "pread64", "pwrite64", "readv", "writev", "lseek", "close",
      "close_range", "dup", "dup2", "dup3", "pipe", "pipe2", "fsync", "fdatasync",
      "ftruncate", "truncate", "fallocate", "fadvise64", "sendfile", "copy_file_range",
      "flock")),
    ("files by path: open, stat, list, create, rename, link, remove, with the *at "
     "twins Python's dir_fd= and shutil use; listxattr/getxattr for shutil.copy2",
     ("open", "openat", "stat", "lstat", "fstat", "newfstatat", "statx", "access",
      "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd", "chdir",
      "fchdir", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
      "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat",
      "utimensat", "umask", "mknod", "mknodat", "statfs", "fstatfs", "listxattr",
      "llistxattr", "flistxattr", "getxattr", "lgetxattr", "fgetxattr")),
    ("processes and threads: fork (clone, see RULES), vfork and exec for subprocess "
     "and multiprocessing, waiting, thread start-up, futexes, scheduling hints",
     ("vfork", "execve", "exit", "exit_group", "wait4", "waitid", "set_tid_address",
      "set_robust_list", "rseq", "arch_prctl", "futex", "sched_yield",
      "sched_getaffinity", "getpriority", "setpriority", "pidfd_open")),
    ("who and where a process is, and its own session (subprocess's "
     "start_new_session: setsid, setpgid; untraced, harmless in its own pid namespace)",
     ("getpid", "getppid", "gettid", "getpgid", "getpgrp", "getsid", "setsid",
      "setpgid")),
    ("its own limits and usage (lowering only: raising a hard limit needs a privilege)",
     ("prlimit64", "getrlimit", "setrlimit", "getrusage", "times")),
    ("signals between the job's own processes, and queued ones (sigqueue: bounded "
     "per job by RLIMIT_SIGPENDING; the budget test queues them)",
     ("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
      "rt_sigtimedwait", "rt_sigsuspend", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
      "sigaltstack", "restart_syscall", "kill", "tgkill")),
    ("time, timers and sleeping",
     ("clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "alarm",
      "setitimer", "getitimer")),
    ("waiting on descriptors: select, poll, epoll (asyncio), eventfd, memfd",
     ("select", "pselect6", "poll", "ppoll", "epoll_create1", "epoll_ctl", "epoll_wait",
      "epoll_pwait", "eventfd2", "memfd_create")),
    ("sockets of the allowed families (socket and socketpair: see RULES): the "
     "job's own unix sockets and loopback in its empty network namespace",
     ("bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
      "getsockopt", "setsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown")),
    ("facts about the machine and its own identity; capget because the self-check's "
     "canary reports the capabilities it has (none)",
     ("uname", "sysinfo", "getrandom", "getuid", "geteuid", "getgid", "getegid",
      "getresuid", "getresgid", "getgroups", "capget")),
    ("System V IPC, private to the job's own IPC namespace (untraced; the jail probe "
     "proves two jobs don't share it)",
     ("shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
      "msgget", "msgsnd", "msgrcv", "msgctl")),
)

# Calls allowed for some arguments only: the argument (by index; the low 32
# bits, all the kernel reads of these) and what passes, else the refusal.
# kind "values": only these values pass; kind "no bits": any of these bits refuses.
SOCKET_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}
IOCTL_REQUESTS = {
    "TCGETS": 0x5401,       # isatty() and io's buffering choice, on every open
    "TIOCGWINSZ": 0x5413,   # os.get_terminal_size, shutil and pandas' display width
    "FIONBIO": 0x5421,      # socket.setblocking
    "FIONCLEX": 0x5450,     # os.set_inheritable(fd, True): FIOCLEX's twin
    "FIOCLEX": 0x5451,      # os.set_inheritable(fd, False)
    "SIOCGIFNAME": 0x8910,  # interface names by index (interfaces() below)
    "SIOCGIFCONF": 0x8912,  # libuuid's node lookup (uuid.uuid1)
    "SIOCGIFFLAGS": 0x8913,  # whether an interface is up (the jail probe reads it)
    "SIOCGIFINDEX": 0x8933,  # socket.if_nametoindex (glibc asks ioctl)
}
PRCTL_OPTIONS = {
    "PR_SET_NAME": PR_SET_NAME,  # a thread naming itself (untraced; harmless)
    "PR_GET_NAME": PR_GET_NAME,
    "PR_GET_SECCOMP": PR_GET_SECCOMP,  # the self-check and the probe read them
    "PR_GET_NO_NEW_PRIVS": PR_GET_NO_NEW_PRIVS,
}
FCNTL_COMMANDS = {
    "F_DUPFD": 0, "F_GETFD": 1, "F_SETFD": 2, "F_GETFL": 3, "F_SETFL": 4,
    "F_GETLK": 5, "F_SETLK": 6, "F_SETLKW": 7,  # sqlite and fcntl.lockf
    "F_OFD_GETLK": 36, "F_OFD_SETLK": 37, "F_OFD_SETLKW": 38,  # their per-descriptor twins
    "F_DUPFD_CLOEXEC": 1030,
}
RULES = {
    "clone": ("no bits", 0, CLONE_NEW_ANY, errno.EPERM,
              "fork and threads, never a new namespace (clone3's flags live in memory a "
              "filter can't read: clone3 is refused with ENOSYS and glibc falls back)"),
    "socket": ("values", 0, SOCKET_FAMILIES, errno.EAFNOSUPPORT,
               "AF_UNIX, AF_INET, AF_INET6 only: no netlink, packet, vsock (not "
               "namespaced: it reaches the hypervisor's host), alg, key, xdp, ..."),
    "socketpair": ("values", 0, SOCKET_FAMILIES, errno.EAFNOSUPPORT, "as socket"),
    "ioctl": ("values", 1, IOCTL_REQUESTS, errno.ENOTTY,
              "the requests the runtime makes, and read-only interface queries"),
    "prctl": ("values", 0, PRCTL_OPTIONS, errno.EINVAL,
              "the runtime makes none; reading its own seccomp and no_new_privs state, "
              "thread names"),
    "fcntl": ("values", 1, FCNTL_COMMANDS, errno.EINVAL,
              "descriptor flags, duplication and locks; no leases, dnotify, signals "
              "on I/O, pipe resizing (F_SETPIPE_SZ spends the host-wide per-user pipe "
              "budget), seals"),
    "personality": ("values", 0, {"PER_LINUX": 0, "query": 0xFFFFFFFF}, errno.EPERM,
                    "the query only: no ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC"),
}

# Known calls a job must never make that nsjail.cfg's policy refuses too:
# answered SECCOMP_RET_TRACE, so the jail's EPERM shows (module docstring).
# test_syscalls.py keeps this the jail policy's list, less what REFUSED holds.
DEFERRED = (
    ("other processes' memory and descriptors",
     ("ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd",
      "kcmp")),
    ("kernel subsystems that are attack surface and that no job needs",
     ("bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
      "io_uring_register", "keyctl", "add_key", "request_key", "open_by_handle_at",
      "name_to_handle_at", "lookup_dcookie")),
    ("administering the machine",
     ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
      "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "iopl", "ioperm",
      "syslog", "vhangup")),
)

# Refused with EPERM, by group: known calls a job must never make.
REFUSED = (
    ("namespaces and mounts: only the zygote builds them",
     ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree",
      "open_tree_attr", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
      "mount_setattr", "statmount", "listmount", "listns")),
    ("other processes' state",
     ("process_mrelease", "get_robust_list")),
    ("kernel subsystems that are attack surface and that no job needs",
     ("modify_ldt", "fanotify_init", "fanotify_mark")),
    ("administering the machine",
     ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
      "setdomainname")),
    ("changing identity or capabilities (a job has none to use)",
     ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
      "setfsgid", "setgroups", "capset")),
)

# Refused with ENOSYS, named for the record (ENOSYS is also the default):
# each would let one job spend a budget its siblings share.
REFUSED_FOR_BUDGETS = (
    ("inotify: instances count per host uid, and every jail is uid 65534",
     ("inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch")),
    ("POSIX message queues (RLIMIT_MSGQUEUE is 0 besides)",
     ("mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
      "mq_getsetattr")),
    ("native AIO: fs.aio-max-nr is one budget for the whole machine",
     ("io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents",
      "io_pgetevents")),
)
FALLBACK_ENOSYS = {"clone3": "glibc falls back to clone, whose flags the filter reads"}

# Lowered by seal(). The kernel counts these per (user namespace, uid), at
# every level up the chain of namespaces: with the job's processes a
# namespace of their own (spawn mode: the jail's; fork mode: the child's own,
# enter_fresh_sandbox) each job has these to itself, and all jobs together
# stay well under the server's own limits, which cap the level above.
JOB_RLIMITS = {
    "RLIMIT_MSGQUEUE": 0,      # POSIX queues are refused anyway
    "RLIMIT_SIGPENDING": 256,  # queued signals (sigqueue, timers) per job
    "RLIMIT_NPROC": 512,       # above the pids cgroup's 128, which is the real cap
}


def policy_actions():
    """{syscall number: ("allow",) | ("errno", code) | ("rule", name) |
    ("defer",)} for every number the policy names; every other number gets
    ENOSYS."""
    actions = {}

    def put(name, action):
        number = NUMBERS[name]
        if number in actions:
            raise ValueError(f"the policy names {name} twice")
        actions[number] = action

    for _, names in ALLOWED:
        for name in names:
            put(name, ("allow",))
    for name in RULES:
        put(name, ("rule", name))
    for _, names in REFUSED:
        for name in names:
            put(name, ("errno", errno.EPERM))
    for _, names in DEFERRED:
        for name in names:
            put(name, ("defer",))
    for _, names in REFUSED_FOR_BUDGETS:
        for name in names:
            put(name, ("errno", errno.ENOSYS))
    for name in FALLBACK_ENOSYS:
        put(name, ("errno", errno.ENOSYS))
    return actions


# ------------------------------------------------------------------ the filter

# Classic BPF opcodes, seccomp return values, and struct seccomp_data offsets
# (nr at 0, arch at 4, args[i] at 16 + 8 i; the low half first on x86_64).
_LD_W_ABS = 0x20
_JA = 0x05
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_ALLOW = 0x7FFF0000
_OFFSET_NR, _OFFSET_ARCH = 0, 4
_MAX_JUMP = 255  # a conditional jump's offsets are 8 bits


def _arg_low(index):
    return 16 + 8 * index


def _ret(value):
    return [(_RET_K, 0, 0, value)]


def _refuse(code):
    return _ret(SECCOMP_RET_ERRNO | code)


def _rule_block(name):
    """Instructions that check one narrowed call's argument and return."""
    kind, index, allowed, refusal, _ = RULES[name]
    code = [(_LD_W_ABS, 0, 0, _arg_low(index))]
    if kind == "no bits":
        return code + [(_JSET_K, 1, 0, allowed)] + _ret(SECCOMP_RET_ALLOW) + _refuse(refusal)
    values = sorted(set(allowed.values()))
    for position, value in enumerate(values):
        # Each jeq jumps to the shared ALLOW below the refusal.
        code.append((_JEQ_K, len(values) - position, 0, value))
    return code + _refuse(refusal) + _ret(SECCOMP_RET_ALLOW)


def _leaf(action):
    if action[0] == "allow":
        return _ret(SECCOMP_RET_ALLOW)
    if action[0] == "errno":
        return _refuse(action[1])
    if action[0] == "defer":
        return _ret(SECCOMP_RET_TRACE)
    return _rule_block(action[1])


def _intervals(actions, default):
    """[(first number, action)]: the runs of consecutive numbers that share an
    action, from 0 up to the x32 bit (each rule's number is a run of its own)."""
    intervals = []

    def add(start, action):
        if not intervals or intervals[-1][1] != action:
            intervals.append((start, action))

    following = 0
    for number in sorted(actions):
        if number > following:
            add(following, default)
        add(number, actions[number])
        following = number + 1
    add(following, default)
    return intervals


def _search_tree(intervals):
    """A balanced binary search over the intervals' first numbers: each inner
    node is one jge; the leaves return. A subtree too long for a jge's 8-bit
    offset is reached through a ja (32-bit offset)."""
    if len(intervals) == 1:
        return _leaf(intervals[0][1])
    middle = len(intervals) // 2
    left = _search_tree(intervals[:middle])
    right = _search_tree(intervals[middle:])
    pivot = intervals[middle][0]
    if len(left) <= _MAX_JUMP:
        return [(_JGE_K, len(left), 0, pivot)] + left + right
    return [(_JGE_K, 0, 1, pivot), (_JA, 0, 0, len(left))] + left + right


def job_filter_instructions():
    """The job's seccomp filter as (code, jt, jf, k) tuples."""
    prologue = [
        (_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        (_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        *_ret(SECCOMP_RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _OFFSET_NR),
        (_JGE_K, 0, 1, X32_SYSCALL_BIT),
        *_refuse(errno.EPERM),
    ]
    return prologue + _search_tree(_intervals(policy_actions(), ("errno", errno.ENOSYS)))


def _pack(instructions):
    return len(instructions), b"".join(struct.pack("=HBBI", *i) for i in instructions)


def job_filter_program():
    """The job's seccomp filter as (instruction count, packed sock_filter bytes)."""
    return _pack(job_filter_instructions())


def allow_all_program():
    """A filter that allows everything (the syscall trace installs it in the
    job filter's place, to see what the runtime would do unrefused)."""
    return _pack(_ret(SECCOMP_RET_ALLOW))


# Compiled once, at import: a fork-mode zygote's children inherit it.
JOB_FILTER = job_filter_program()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# The jail probe's diagnostic copy sets this: the kernel then logs every
# refusal (audit type 1326, with the syscall's number) for the host to read.
LOG_REFUSALS = False


def install_program(program, log=False):
    """Install a filter on every thread of this process (and what it will fork).

    Needs no_new_privs (or CAP_SYS_ADMIN); seal() sets it first.
    """
    count, packed = program
    buffer = ctypes.create_string_buffer(packed, len(packed))
    fprog = _SockFprog(count, ctypes.addressof(buffer))
    flags = SECCOMP_FILTER_FLAG_TSYNC | (SECCOMP_FILTER_FLAG_LOG if log else 0)
    result = _libc.syscall(ctypes.c_long(NUMBERS["seccomp"]),
                           ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(flags),
                           ctypes.byref(fprog))
    if result > 0:  # TSYNC: the id of a thread that could not be synchronised
        raise OSError(errno.EAGAIN, f"installing the job's seccomp filter: thread {result} "
                      "could not take it")
    _check(result, "installing the job's seccomp filter")



def install_job_filter():
    """Install the job filter on this process."""
    install_program(JOB_FILTER, log=LOG_REFUSALS)


def _check(result, what):
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


# ------------------------------------------------------------ capabilities


def _capability_header():
    return (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)


def capabilities():
    """(effective, permitted, inheritable) of this process, as 64-bit masks."""
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.syscall(NUMBERS["capget"], _capability_header(), data), "capget")
    low_eff, low_perm, low_inh, high_eff, high_perm, high_inh = data
    return ((high_eff << 32) | low_eff, (high_perm << 32) | low_perm,
            (high_inh << 32) | low_inh)


def drop_capabilities():
    """Empty the effective, permitted and inheritable sets and the ambient one.

    The bounding set stays (changing it needs CAP_SETPCAP): with no_new_privs
    and nosuid mounts, nothing can raise a capability from it again.
    """
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
           "clearing ambient capabilities")
    _check(_libc.syscall(NUMBERS["capset"], _capability_header(), (ctypes.c_uint32 * 6)()),
           "capset")


# -------------------------------------------------------------- the seal


def lower_job_rlimits():
    """Set JOB_RLIMITS (never above what the process already has)."""
    for name, value in JOB_RLIMITS.items():
        which = getattr(resource, name)
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def seal(cpu_seconds=None):
    """Make this process a job process: no capabilities, no_new_privs, its own
    budgets, the job filter, and (when given) its CPU-time limit. Irreversible.

    socket.if_nameindex() asks netlink, which the filter refuses: it gets
    interfaces() in its place, the same answer through ioctl."""
    drop_capabilities()
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "setting no_new_privs")
    if cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    lower_job_rlimits()
    install_job_filter()
    socket.if_nameindex = interfaces


# ------------------------------------------------------ fork-mode sandbox


def unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd, flags):
    _check(_libc.setns(fd, flags), f"setns({flags:#x})")


def mount_tmpfs(target, size_bytes):
    options = f"size={size_bytes},mode=1777".encode()
    _check(_libc.mount(b"tmpfs", target.encode(), b"tmpfs",
                       MS_NOSUID | MS_NODEV | MS_NOEXEC, options),
           f"mounting a fresh tmpfs on {target}")


def enter_fresh_sandbox(tmp_bytes, shm_bytes, own_user_namespace=False):
    """Turn a just-forked zygote child into a sandbox of its own.

    The caller forked it as PID 1 of a new pid namespace. Here it gets its
    own mount, IPC and network namespaces (an empty one: no interface, no
    peer's abstract unix sockets), its own session and process group (or
    kill(0, sig) would reach every job the zygote forked), and fresh, empty
    tmpfs mounts on /tmp and /dev/shm. The working directory moves onto the
    new /tmp: the old one still pointed into the zygote's shared /tmp.

    Last, with own_user_namespace, a user namespace of its own: the kernel
    keeps the per-user budgets (RLIMIT_NPROC, RLIMIT_SIGPENDING,
    RLIMIT_MSGQUEUE, RLIMIT_MEMLOCK) per (user namespace, uid), so without it
    every job of the zygote spends one. It comes after the mounts, which
    thereby stay owned by the jail's namespace (the job can't undo them, and
    its uid stays mapped there, so it writes to them). Nothing inside the
    jail can write its id map (there is no /proc, and none can be mounted),
    so until the server writes one from outside the job's ids read as the
    overflow id, 65534; that is why the zygote makes it only when told to.
    """
    os.setsid()
    unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET)
    # Mount events must not propagate back into the zygote's namespace.
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None),
           "making the mount tree private")
    mount_tmpfs("/tmp", tmp_bytes)
    mount_tmpfs("/dev/shm", shm_bytes)
    os.chdir("/tmp")
    if own_user_namespace:
        unshare(CLONE_NEWUSER)


# -------------------------------------------------- what the self-check asks

# The answers a sealed job must get inside the jail (refusals()), for the
# self-check's canary: ptrace, bpf and io_uring_setup are the jail policy's.
EXPECTED_REFUSALS = {
    "socket(AF_VSOCK)": errno.EAFNOSUPPORT,
    "socket(AF_NETLINK)": errno.EAFNOSUPPORT,
    "socket(AF_PACKET)": errno.EAFNOSUPPORT,
    "socket(AF_ALG)": errno.EAFNOSUPPORT,
    "unshare(CLONE_NEWUSER)": errno.EPERM,
    "mount": errno.EPERM,
    "clone(CLONE_NEWUSER)": errno.EPERM,
    "clone3": errno.ENOSYS,
    "ptrace": errno.EPERM,
    "bpf": errno.EPERM,
    "io_uring_setup": errno.EPERM,
    "inotify_init1": errno.ENOSYS,
    "mq_open": errno.ENOSYS,
    "syscall 471 (newer than the list)": errno.ENOSYS,
    "ioctl(TIOCSTI)": errno.ENOTTY,
    "prctl(PR_GET_DUMPABLE)": errno.EINVAL,
    "fcntl(F_SETPIPE_SZ)": errno.EINVAL,
}


def _call(number, *args):
    """errno of a raw system call, 0 if it succeeded (a descriptor it made is closed)."""
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    if result < 0:
        return ctypes.get_errno()
    if number in _RETURNS_FD:
        os.close(result)
    return 0


_RETURNS_FD = {NUMBERS["socket"], NUMBERS["inotify_init1"], NUMBERS["io_uring_setup"],
               NUMBERS["bpf"], NUMBERS["mq_open"]}


def refusals():
    """{call: errno} for calls a job must be refused, for the self-check's
    canary to compare with EXPECTED_REFUSALS. Each is made with arguments
    that would do no harm and send nothing were it let through: a socket is
    closed at once, a clone's child would die on its bad stack, the kernel
    would answer the ioctl on fd -1 with EBADF and the others with EFAULT or
    EINVAL."""
    answers = {}
    for name, family in (("AF_VSOCK", 40), ("AF_NETLINK", 16), ("AF_PACKET", 17),
                         ("AF_ALG", 38)):
        answers[f"socket({name})"] = _call(NUMBERS["socket"], family,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
    answers["unshare(CLONE_NEWUSER)"] = _call(NUMBERS["unshare"], CLONE_NEWUSER)
    answers["mount"] = _call(NUMBERS["mount"], 0, 0, 0, 0, 0)
    answers["clone(CLONE_NEWUSER)"] = _call(NUMBERS["clone"], CLONE_NEWUSER | 17, -1, 0, 0, 0)
    answers["clone3"] = _call(NUMBERS["clone3"], 0, 0)
    answers["ptrace"] = _call(NUMBERS["ptrace"], -1, 0, 0, 0)
    answers["bpf"] = _call(NUMBERS["bpf"], 0, 0, 0)
    answers["io_uring_setup"] = _call(NUMBERS["io_uring_setup"], 0, 0)
    answers["inotify_init1"] = _call(NUMBERS["inotify_init1"], os.O_CLOEXEC)
    answers["mq_open"] = _call(NUMBERS["mq_open"], 0, 0, 0, 0)
    answers["syscall 471 (newer than the list)"] = _call(471, -1, -1, -1)
    answers["ioctl(TIOCSTI)"] = _call(NUMBERS["ioctl"], -1, 0x5412, 0)
    answers["prctl(PR_GET_DUMPABLE)"] = _call(NUMBERS["prctl"], 3, 0, 0, 0, 0)
    read_end, write_end = os.pipe()
    answers["fcntl(F_SETPIPE_SZ)"] = _call(NUMBERS["fcntl"], write_end, 1031, 1 << 20)
    os.close(read_end)
    os.close(write_end)
    return answers


def interfaces():
    """[(index, name)] of the network interfaces this process sees, as
    socket.if_nameindex() gives them, through ioctl SIOCGIFNAME: the job
    filter refuses netlink, which if_nameindex() asks."""
    found = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for index in range(1, 256):
            request = struct.pack("16si20x", b"", index)
            try:
                reply = fcntl.ioctl(probe.fileno(), IOCTL_REQUESTS["SIOCGIFNAME"], request)
            except OSError:
                continue
            found.append((index, reply[:16].split(b"\0", 1)[0].decode()))
    finally:
        probe.close()
    return found
