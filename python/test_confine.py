"""Tests for python/confine.py: the job's own seccomp filter and seal().

Each test seals a forked child of the test process (sealing is irreversible),
lets it try system calls and reports back over a pipe. No root and no jail
needed: no_new_privs lets any process install a filter on itself.

Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import ctypes
import errno
import json
import os
import resource
import struct
import threading
import unittest

import confine

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def syscall_errno(number, *args):
    """errno of a raw system call, 0 when it succeeded."""
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return 0 if result != -1 else ctypes.get_errno()


def in_sealed_child(probe, cpu_seconds=None):
    """Fork, seal the child, run probe() there; its JSON-able return value."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
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
        raise AssertionError(f"the sealed child died: status {status:#x}")
    result = json.loads(data)
    if "error" in result:
        raise AssertionError(result["error"])
    return result["ok"]


class FilterProgramTest(unittest.TestCase):
    def test_every_jump_lands_inside_the_program(self):
        count, packed = confine.job_filter_program()
        self.assertEqual(len(packed), 8 * count)
        for index in range(count):
            code, if_true, if_false, _ = struct.unpack_from(
                "=HBBI", packed, 8 * index)
            if code in (0x15, 0x35, 0x45):  # conditional jumps
                self.assertLess(index + 1 + max(if_true, if_false), count)

    def test_it_ends_in_return_instructions(self):
        count, packed = confine.job_filter_program()
        last_codes = [int.from_bytes(packed[8 * i:8 * i + 2], "little") for i in range(count - 4, count)]
        self.assertEqual(last_codes, [0x06] * 4)


# x86_64 numbers, written out here rather than taken from confine.py, so that
# a wrong or missing entry there fails this test.
MUST_BE_REFUSED = {
    "pivot_root": 155, "chroot": 161, "mount": 165, "umount2": 166, "unshare": 272,
    "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "open_tree_attr": 467,
}


class SealTest(unittest.TestCase):
    def test_namespace_and_mount_calls_are_refused(self):
        refused = in_sealed_child(lambda: {
            name: syscall_errno(number, 0, 0, 0, 0, 0)
            for name, number in MUST_BE_REFUSED.items()
        })
        for name, code in refused.items():
            self.assertEqual(code, errno.EPERM, f"{name} gave {errno.errorcode.get(code, code)}")

    def test_clone_with_namespace_flags_is_refused_and_clone3_is_enosys(self):
        codes = in_sealed_child(lambda: {
            "clone_newuser": syscall_errno(56, 0x10000000 | 17, 0, 0, 0, 0),
            "clone_newnet": syscall_errno(56, 0x40000000 | 17, 0, 0, 0, 0),
            "clone3": syscall_errno(435, 0, 0),
            "x32_getpid": syscall_errno(0x40000000 | 39),
        })
        self.assertEqual(codes, {"clone_newuser": errno.EPERM, "clone_newnet": errno.EPERM,
                                 "clone3": errno.ENOSYS, "x32_getpid": errno.EPERM})

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

    def test_privileges_are_gone_and_the_cpu_limit_is_set(self):
        state = in_sealed_child(lambda: {
            "capabilities": confine.capabilities(),
            "no_new_privs": libc.prctl(39, 0, 0, 0, 0),
            "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU),
        }, cpu_seconds=7)
        self.assertEqual(state, {"capabilities": [0, 0, 0], "no_new_privs": 1,
                                 "rlimit_cpu": [7, 7]})


if __name__ == "__main__":
    unittest.main()
