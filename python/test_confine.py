"""Tests for python/confine.py against the real kernel: the job filter and seal().

Each test seals a forked child of the test process (sealing is irreversible),
lets it make system calls and reports back over a pipe; where a call's
answer matters, an unsealed child makes the same calls as the control. No
root and no jail needed: no_new_privs lets any process install a filter on
itself. (test_syscalls.py checks the policy and the compiled program without
the kernel; the jail-policy tests, `make test-jail`, check all of it inside
the real jail.)

Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import ctypes
import errno
import json
import os
import resource
import signal
import socket
import threading
import unittest

import confine
import syscall_table

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

ALLOWED = {confine.NUMBERS[name] for _, names in confine.ALLOWED for name in names}
EPERM = {confine.NUMBERS[name] for _, names in confine.REFUSED for name in names}
RULED = {confine.NUMBERS[name] for name in confine.RULES}
# Called with every argument -1 the kernel answers these without doing
# anything, except: the ones that never return or end the caller (vfork,
# exit, rt_sigreturn, fork, pause); vhangup, which would hang up the test's
# terminal if it were let through; uretprobe and uprobe, which the kernel
# runs before seccomp and answer a call from outside their trampoline with
# SIGILL; and the System V get calls, which would create an object (they get
# a key and no IPC_CREAT instead).
NOT_CALLED = {syscall_table.NUMBERS[name] for name in (
    "vfork", "exit", "exit_group", "rt_sigreturn", "fork", "pause", "vhangup",
    "uretprobe", "uprobe")}
ARGUMENTS = {syscall_table.NUMBERS["msgget"]: (-1, 0), syscall_table.NUMBERS["semget"]: (-1, 0, 0),
             syscall_table.NUMBERS["shmget"]: (-1, 0, 0)}
POISON = (-1,) * 6
NEWER_THAN_THE_LIST = (471, 472, 480, 500, 511, 1000, 4096, 0x3FFFFFFF)


def syscall_errno(number, *args):
    """errno of a raw system call, 0 when it succeeded."""
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return 0 if result != -1 else ctypes.get_errno()


def in_child(probe, seal=True, cpu_seconds=None):
    """Fork, seal the child (unless told not to), run probe() there; its
    JSON-able return value."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            signal.alarm(60)  # a call that blocks must not hang the suite
            if seal:
                confine.seal(cpu_seconds)
            result = {"ok": probe()}
        except BaseException as exc:  # report, never fall back into the test runner
            result = {"error": repr(exc)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise AssertionError(f"the child died: status {status:#x}")
    result = json.loads(data)
    if "error" in result:
        raise AssertionError(result["error"])
    return result["ok"]


def in_sealed_child(probe, cpu_seconds=None):
    return in_child(probe, True, cpu_seconds)


def answers(numbers):
    """A probe: {number: errno} of each call with harmless arguments."""
    def probe():
        return {str(n): syscall_errno(n, *ARGUMENTS.get(n, POISON)) for n in numbers}
    return probe


def name(number):
    return syscall_table.NAMES.get(number, str(number))


# x86_64 numbers, written out here rather than taken from confine.py, so that
# a wrong or missing entry there fails this test.
MUST_BE_REFUSED = {
    "pivot_root": 155, "chroot": 161, "mount": 165, "umount2": 166, "unshare": 272,
    "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "open_tree_attr": 467,
}
# Deferred to the jail policy: its EPERM under it, ENOSYS alone (as here).
MUST_BE_DEFERRED = {
    "ptrace": 101, "bpf": 321, "perf_event_open": 298, "io_uring_setup": 425,
    "userfaultfd": 323, "keyctl": 250, "process_vm_readv": 310, "kexec_load": 246,
}
DEFERRED = {confine.NUMBERS[name] for _, names in confine.DEFERRED for name in names}


def install_jail_policy_stand_in():
    """A filter refusing ptrace with EPERM, as nsjail.cfg's policy does."""
    confine._check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")
    confine.install_program(confine._pack([
        (0x20, 0, 0, 0), (0x15, 0, 1, 101),
        (0x06, 0, 0, confine.SECCOMP_RET_ERRNO | errno.EPERM),
        (0x06, 0, 0, confine.SECCOMP_RET_ALLOW)]))


class SealTest(unittest.TestCase):
    def test_namespace_and_mount_calls_are_refused_with_eperm(self):
        refused = in_sealed_child(lambda: {
            name: syscall_errno(number, 0, 0, 0, 0, 0)
            for name, number in MUST_BE_REFUSED.items()
        })
        for name_, code in refused.items():
            self.assertEqual(code, errno.EPERM, f"{name_} gave {errno.errorcode.get(code, code)}")

    def test_the_jail_policys_own_calls_are_refused_alone_and_answered_by_it_beneath(self):
        alone = in_sealed_child(lambda: {
            name: syscall_errno(number, -1, 0, 0, 0, 0)
            for name, number in MUST_BE_DEFERRED.items()
        })
        self.assertEqual(alone, {name: errno.ENOSYS for name in MUST_BE_DEFERRED})

        def under_a_jail_policy():
            install_jail_policy_stand_in()
            confine.seal()
            return {"ptrace": syscall_errno(101, -1, 0, 0, 0), "bpf": syscall_errno(321, 0, 0, 0),
                    "mount": syscall_errno(165, 0, 0, 0, 0, 0)}
        self.assertEqual(in_child(under_a_jail_policy, seal=False),
                         {"ptrace": errno.EPERM, "bpf": errno.ENOSYS, "mount": errno.EPERM})

    def test_clone_with_namespace_flags_is_refused_and_clone3_is_enosys(self):
        codes = in_sealed_child(lambda: {
            "clone_newuser": syscall_errno(56, 0x10000000 | 17, 0, 0, 0, 0),
            "clone_newnet": syscall_errno(56, 0x40000000 | 17, 0, 0, 0, 0),
            "clone3": syscall_errno(435, 0, 0),
            "x32_getpid": syscall_errno(0x40000000 | 39),
            "x32_read": syscall_errno(0x40000000 | 0, -1, 0, 0),
        })
        self.assertEqual(codes, {"clone_newuser": errno.EPERM, "clone_newnet": errno.EPERM,
                                 "clone3": errno.ENOSYS, "x32_getpid": errno.EPERM,
                                 "x32_read": errno.EPERM})

    def test_what_jobs_need_still_works(self):
        def probe():
            thread = threading.Thread(target=lambda: None)
            thread.start()
            thread.join()
            child = os.fork()  # glibc's fork is clone without namespace flags
            if child == 0:
                os._exit(7)
            _, status = os.waitpid(child, 0)
            return {"fork": os.waitstatus_to_exitcode(status), "pid": os.getpid() > 0,
                    "thread": True}
        self.assertEqual(in_sealed_child(probe), {"fork": 7, "pid": True, "thread": True})

    def test_privileges_are_gone_and_the_limits_are_set(self):
        state = in_sealed_child(lambda: {
            "capabilities": confine.capabilities(),
            "no_new_privs": libc.prctl(39, 0, 0, 0, 0),
            "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU),
            "rlimit_msgqueue": resource.getrlimit(resource.RLIMIT_MSGQUEUE),
            "rlimit_sigpending": resource.getrlimit(resource.RLIMIT_SIGPENDING),
            "rlimit_nproc": resource.getrlimit(resource.RLIMIT_NPROC),
        }, cpu_seconds=7)
        self.assertEqual(state, {"capabilities": [0, 0, 0], "no_new_privs": 1,
                                 "rlimit_cpu": [7, 7], "rlimit_msgqueue": [0, 0],
                                 "rlimit_sigpending": [256, 256], "rlimit_nproc": [512, 512]})


class AllowListTest(unittest.TestCase):
    def test_every_allowed_call_gets_the_kernels_own_answer(self):
        numbers = sorted(ALLOWED - NOT_CALLED)
        plain = in_child(answers(numbers), seal=False)
        sealed = in_sealed_child(answers(numbers))
        differ = {name(int(n)): (errno.errorcode.get(plain[n]), errno.errorcode.get(sealed[n]))
                  for n in plain if plain[n] != sealed[n]}
        self.assertEqual(differ, {}, "(without the filter, with it)")

    def test_every_other_call_is_refused_with_its_errno(self):
        known = set(range(syscall_table.LAST_KNOWN + 1))
        numbers = sorted((known | set(NEWER_THAN_THE_LIST)) - ALLOWED - RULED - NOT_CALLED)
        sealed = in_sealed_child(answers(numbers))
        wrong = {}
        for n, code in sealed.items():
            want = errno.EPERM if int(n) in EPERM else errno.ENOSYS
            if code != want:
                wrong[name(int(n))] = (errno.errorcode.get(code, code), errno.errorcode[want])
        self.assertEqual(wrong, {}, "(got, want)")
        self.assertGreater(len(sealed), 180)

    def test_socket_families_other_than_unix_inet_inet6_are_refused(self):
        def probe():
            results = {}
            for family in range(0, 46):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    ctypes.set_errno(0)
                    fd = libc.socket(family, kind | socket.SOCK_CLOEXEC, 0)
                    results[f"{family}/{kind}"] = 0 if fd >= 0 else ctypes.get_errno()
                    if fd >= 0:
                        os.close(fd)
            pair = (ctypes.c_int * 2)()
            results["socketpair(AF_UNIX)"] = 0 if libc.socketpair(1, 1, 0, pair) == 0 \
                else ctypes.get_errno()
            results["socketpair(AF_NETLINK)"] = 0 if libc.socketpair(16, 2, 0, pair) == 0 \
                else ctypes.get_errno()
            return results
        results = in_sealed_child(probe)
        for key, code in results.items():
            if key.startswith("socketpair"):
                continue
            family = int(key.split("/")[0])
            if family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
                self.assertNotEqual(code, errno.EAFNOSUPPORT, key)
            else:
                self.assertEqual(code, errno.EAFNOSUPPORT, key)
        self.assertEqual(results["1/1"], 0)
        self.assertEqual(results["socketpair(AF_UNIX)"], 0)
        self.assertEqual(results["socketpair(AF_NETLINK)"], errno.EAFNOSUPPORT)

    def test_ioctl_prctl_fcntl_and_personality_are_narrowed(self):
        def probe():
            read_end, write_end = os.pipe()
            fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach()
            ioctl, prctl, fcntl_ = (confine.NUMBERS[n] for n in ("ioctl", "prctl", "fcntl"))
            return {
                # Allowed requests reach the kernel: TCGETS on a pipe is its ENOTTY,
                # FIONBIO on a socket works; FIONREAD on a pipe would work, but
                # is refused.
                "ioctl(TCGETS) on a pipe": syscall_errno(ioctl, read_end, 0x5401, 0),
                "ioctl(FIONBIO) on a socket": syscall_errno(
                    ioctl, fd, 0x5421, ctypes.addressof(ctypes.c_int(1))),
                "ioctl(FIOCLEX)": syscall_errno(ioctl, read_end, 0x5451, 0),
                "ioctl(FIONREAD) on a pipe": syscall_errno(
                    ioctl, read_end, 0x541B, ctypes.addressof(ctypes.c_int(0))),
                "ioctl(TIOCSTI) on fd -1": syscall_errno(ioctl, -1, 0x5412, 0),
                "prctl(PR_GET_NO_NEW_PRIVS)": syscall_errno(prctl, 39, 0, 0, 0, 0),
                "prctl(PR_GET_SECCOMP)": syscall_errno(prctl, 21, 0, 0, 0, 0),
                "prctl(PR_SET_NAME)": syscall_errno(
                    prctl, 15, ctypes.addressof(ctypes.create_string_buffer(b"job")), 0, 0, 0),
                "prctl(PR_GET_DUMPABLE)": syscall_errno(prctl, 3, 0, 0, 0, 0),
                "prctl(PR_SET_SECCOMP)": syscall_errno(prctl, 22, 0, 0, 0, 0),
                "fcntl(F_GETFL)": syscall_errno(fcntl_, read_end, 3),
                "fcntl(F_SETFL)": syscall_errno(fcntl_, read_end, 4, os.O_NONBLOCK),
                "fcntl(F_DUPFD_CLOEXEC) on fd -1": syscall_errno(fcntl_, -1, 1030, 0),
                "fcntl(F_SETPIPE_SZ)": syscall_errno(fcntl_, write_end, 1031, 1 << 20),
                "fcntl(F_GETPIPE_SZ)": syscall_errno(fcntl_, write_end, 1032),
                "fcntl(F_SETLEASE)": syscall_errno(fcntl_, -1, 1024, 0),
                "personality(query)": syscall_errno(confine.NUMBERS["personality"], 0xFFFFFFFF),
                "personality(ADDR_NO_RANDOMIZE)": syscall_errno(
                    confine.NUMBERS["personality"], 0x0040000),
            }
        self.assertEqual(in_sealed_child(probe), {
            "ioctl(TCGETS) on a pipe": errno.ENOTTY,
            "ioctl(FIONBIO) on a socket": 0,
            "ioctl(FIOCLEX)": 0,
            "ioctl(FIONREAD) on a pipe": errno.ENOTTY,
            "ioctl(TIOCSTI) on fd -1": errno.ENOTTY,
            "prctl(PR_GET_NO_NEW_PRIVS)": 0,
            "prctl(PR_GET_SECCOMP)": 0,
            "prctl(PR_SET_NAME)": 0,
            "prctl(PR_GET_DUMPABLE)": errno.EINVAL,
            "prctl(PR_SET_SECCOMP)": errno.EINVAL,
            "fcntl(F_GETFL)": 0,
            "fcntl(F_SETFL)": 0,
            "fcntl(F_DUPFD_CLOEXEC) on fd -1": errno.EBADF,
            "fcntl(F_SETPIPE_SZ)": errno.EINVAL,
            "fcntl(F_GETPIPE_SZ)": errno.EINVAL,
            "fcntl(F_SETLEASE)": errno.EINVAL,
            "personality(query)": 0,
            "personality(ADDR_NO_RANDOMIZE)": errno.EPERM,
        })

    def test_the_self_checks_refusals_are_what_it_expects_and_only_with_the_filter(self):
        def in_a_jail():
            install_jail_policy_stand_in()  # ptrace's EPERM comes from it
            confine.seal()
            return confine.refusals()
        expected = dict(confine.EXPECTED_REFUSALS)
        for call in ("bpf", "io_uring_setup"):  # the stand-in refuses ptrace only
            expected[call] = errno.ENOSYS
        self.assertEqual(in_child(in_a_jail, seal=False), expected)
        unsealed = in_child(confine.refusals, seal=False)
        self.assertNotEqual(unsealed["socket(AF_NETLINK)"], errno.EAFNOSUPPORT)
        self.assertNotEqual(unsealed["fcntl(F_SETPIPE_SZ)"], errno.EINVAL)

    def test_if_nameindex_answers_without_netlink_as_it_does_with_it(self):
        with_netlink = in_child(socket.if_nameindex, seal=False)
        self.assertIn([1, "lo"], with_netlink)
        self.assertEqual(in_sealed_child(lambda: socket.if_nameindex()), with_netlink)
        self.assertEqual(in_sealed_child(lambda: socket.if_nametoindex("lo")), 1)


if __name__ == "__main__":
    unittest.main()
