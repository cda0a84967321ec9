"""The walls a job process builds around itself before any script runs.

Both isolation modes end in `seal()`, so every script runs behind the same
filter whatever made its process:

- spawn mode: the runner, a fresh interpreter in a jail of its own, calls
  `seal()` once it is warm, before it reports ready;
- fork mode: each job child of the zygote first calls `enter_fresh_sandbox()`
  (own pid, mount, ipc and network namespaces, a new session, fresh tmpfs
  /tmp and /dev/shm), then `seal()`.

What `seal()` adds on top of the jail's own policy (nsjail.cfg):
- no capabilities left, not even in the jail's user namespace (the fork-mode
  zygote keeps CAP_SYS_ADMIN there to build each child's namespaces);
- no_new_privs;
- a seccomp filter of the job's own that refuses what only a zygote needs:
  unshare, setns, the whole mount family, pivot_root, chroot, clone with any
  CLONE_NEW* flag (clone3 gets ENOSYS: its flags live in memory a filter
  can't read, and glibc then falls back to clone), and the x32 ABI; a
  foreign architecture is killed.

Stdlib only (ctypes), x86_64 Linux only: the syscall numbers below are that
ABI's, and the filter kills any process that enters the kernel through
another. Every failure raises OSError; the callers refuse to run a job then.
"""

import ctypes
import errno
import os
import resource
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
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_CLONE = 56
SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_CLONE3 = 435
X32_SYSCALL_BIT = 0x40000000
REFUSED_SYSCALLS = {
    "pivot_root": 155,
    "chroot": 161,
    "mount": 165,
    "umount2": 166,
    "unshare": 272,
    "setns": 308,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    # Newer than nsjail 3.6's policy compiler, so only a raw filter names it.
    "open_tree_attr": 467,
}

AUDIT_ARCH_X86_64 = 0xC000003E

# Classic BPF opcodes and seccomp return values.
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
# struct seccomp_data: nr at 0, arch at 4, args[0] (low half on x86_64) at 16.
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0_LOW = 0, 4, 16


def _check(result, what):
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


# ------------------------------------------------------------------ filter


def job_filter_program():
    """The job's seccomp filter as (instruction count, packed sock_filter bytes).

    Jump targets are written as labels and resolved to the relative offsets
    classic BPF wants once the program's length is known.
    """
    program = [
        (_BPF_LD_W_ABS, None, None, _OFFSET_ARCH),
        (_BPF_JEQ_K, None, "kill", AUDIT_ARCH_X86_64),
        (_BPF_LD_W_ABS, None, None, _OFFSET_NR),
        (_BPF_JGE_K, "eperm", None, X32_SYSCALL_BIT),
    ]
    for number in sorted(REFUSED_SYSCALLS.values()):
        program.append((_BPF_JEQ_K, "eperm", None, number))
    program += [
        (_BPF_JEQ_K, "enosys", None, SYS_CLONE3),
        (_BPF_JEQ_K, None, "allow", SYS_CLONE),
        (_BPF_LD_W_ABS, None, None, _OFFSET_ARG0_LOW),
        (_BPF_JSET_K, "eperm", "allow", CLONE_NEW_ANY),
    ]
    returns = {
        "allow": SECCOMP_RET_ALLOW,
        "eperm": SECCOMP_RET_ERRNO | errno.EPERM,
        "enosys": SECCOMP_RET_ERRNO | errno.ENOSYS,
        "kill": SECCOMP_RET_KILL_PROCESS,
    }
    labels = {}
    for name, value in returns.items():
        labels[name] = len(program)
        program.append((_BPF_RET_K, None, None, value))

    packed = bytearray()
    for index, (code, if_true, if_false, k) in enumerate(program):
        def offset(target):
            return 0 if target is None else labels[target] - index - 1
        packed += struct.pack("=HBBI", code, offset(if_true), offset(if_false), k)
    return len(program), bytes(packed)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_job_filter():
    """Install the job filter on this process (and everything it will fork).

    Needs no_new_privs (or CAP_SYS_ADMIN); seal() sets it first.
    """
    count, packed = job_filter_program()
    buffer = ctypes.create_string_buffer(packed, len(packed))
    fprog = _SockFprog(count, ctypes.addressof(buffer))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
           "installing the job's seccomp filter")


# ------------------------------------------------------------ capabilities


def _capability_header():
    return (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)


def capabilities():
    """(effective, permitted, inheritable) of this process, as 64-bit masks."""
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.syscall(SYS_CAPGET, _capability_header(), data), "capget")
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
    _check(_libc.syscall(SYS_CAPSET, _capability_header(), (ctypes.c_uint32 * 6)()),
           "capset")


# -------------------------------------------------------------- the seal


def seal(cpu_seconds=None):
    """Make this process a job process: no capabilities, no_new_privs, the
    job filter, and (when given) its own CPU-time limit. Irreversible."""
    drop_capabilities()
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "setting no_new_privs")
    if cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    install_job_filter()


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


def enter_fresh_sandbox(tmp_bytes, shm_bytes):
    """Turn a just-forked zygote child into a sandbox of its own.

    The caller forked it as PID 1 of a new pid namespace. Here it gets its
    own mount, IPC and network namespaces (an empty one: no interface, no
    peer's abstract unix sockets), its own session and process group (or
    kill(0, sig) would reach every job the zygote forked), and fresh, empty
    tmpfs mounts on /tmp and /dev/shm. The working directory moves onto the
    new /tmp: the old one still pointed into the zygote's shared /tmp.
    """
    os.setsid()
    unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET)
    # Mount events must not propagate back into the zygote's namespace.
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None),
           "making the mount tree private")
    mount_tmpfs("/tmp", tmp_bytes)
    mount_tmpfs("/dev/shm", shm_bytes)
    os.chdir("/tmp")
