"""The self-check's canary: what a script can see and do from inside a job.

The server runs it through the real sandbox at start-up (worker/src/selfcheck)
and refuses to serve unless every fact it reports is what the walls promise.
Every probe that could reach a network stays on this machine: connect() on a
UDP socket sends nothing (it only looks up a route), and the TCP attempt goes
to 127.0.0.1. Ends by trying to kill every process it can reach.

It is a job script like any other (the runner calls main()), stdlib and numpy
only.
"""

import ctypes
import os
import resource
import socket

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def errno_of(result):
    return 0 if result >= 0 else ctypes.get_errno()


def os_error(action):
    try:
        action()
        return 0
    except OSError as exc:
        return exc.errno or -1


def writable(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return True
    except OSError:
        return False


def udp_route():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return os_error(lambda: s.connect(("192.0.2.1", 9)))
    finally:
        s.close()


def tcp_loopback():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        return os_error(lambda: s.connect(("127.0.0.1", 9)))
    finally:
        s.close()


def capabilities():
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    libc.syscall(125, header, data)
    return data[0] | (data[3] << 32)


def refusals():
    """The job filter's answers to calls a job must be refused, and what
    they must be, from the runner's own confine module (already imported:
    a job can't reach the runner's directory on sys.path). Each call does
    no harm and sends nothing were it let through (confine.refusals)."""
    import confine
    return confine.refusals(), dict(confine.EXPECTED_REFUSALS)


def main():
    import numpy
    statvfs = os.statvfs("/tmp")
    facts = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "proc": os.path.exists("/proc/self"),
        "interfaces": [name for _, name in socket.if_nameindex()],
        "udp_route": udp_route(),
        "tcp_loopback": tcp_loopback(),
        "written": [p for p in ("/canary", "/usr/canary", "/opt/canary", "/pyexec/canary",
                                "/dev/canary") if writable(p)],
        "tmp_writable": writable("/tmp/canary"),
        "tmp_bytes": statvfs.f_blocks * statvfs.f_frsize,
        "unshare": errno_of(libc.unshare(0x10000000)),
        "mount": errno_of(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        "clone3": errno_of(libc.syscall(435, None, 0)),
        "ptrace": errno_of(libc.ptrace(0, 0, None, None)),
        "bpf": errno_of(libc.syscall(321, 0, None, 0)),
        "capabilities": capabilities(),
        "no_new_privs": libc.prctl(39, 0, 0, 0, 0),
        "rlimit_fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[1],
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU)[1],
        "random": float(numpy.random.random()),
    }
    facts["refusals"], facts["expected_refusals"] = refusals()
    facts["kill_all"] = os_error(lambda: os.kill(-1, 9))
    facts["kill_group"] = os_error(lambda: os.kill(0, 9))
    return facts
