# Each call with arguments that do no harm if it were allowed; the tag says
# which wall must refuse it: P = nsjail.cfg's policy, J = the job's own filter
# (python/confine.py). Without the walls the first call (unshare of a user and
# a mount namespace) is the escape itself, and gives the calls after it the
# capabilities that make the kernel answer something other than EPERM.
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
me = os.getpid()
X32 = 0x40000000
NEW = {"NEWNS": 0x20000, "NEWCGROUP": 0x2000000, "NEWUTS": 0x4000000, "NEWIPC": 0x8000000,
       "NEWUSER": 0x10000000, "NEWPID": 0x20000000, "NEWNET": 0x40000000}
CALLS = [
    # Before the unshare: once in a user namespace of its own with no uid map,
    # the kernel would refuse a nested one anyway.
    ("clone(NEWUSER)", "PJ", 56, NEW["NEWUSER"] | 17, 0, 0, 0, 0),
    ("unshare(NEWUSER|NEWNS)", "J", 272, NEW["NEWUSER"] | NEW["NEWNS"]),
    ("setns", "J", 308, -1, 0),
    ("mount", "J", 165, 0, 0, 0, 0, 0),
    ("umount2", "PJ", 166, 0, 0),
    ("open_tree", "PJ", 428, -100, 0, 0),
    ("move_mount", "PJ", 429, -1, 0, -1, 0, 0),
    ("fsopen", "PJ", 430, 0, 0),
    ("fsconfig", "PJ", 431, -1, 0, 0, 0, 0),
    ("fsmount", "PJ", 432, -1, 0, 0),
    ("fspick", "PJ", 433, -100, 0, 0),
    ("mount_setattr", "PJ", 442, -1, 0, 0, 0, 0),
    ("open_tree_attr", "J", 467, -100, 0, 0, 0, 0),
    ("pivot_root", "PJ", 155, 0, 0),
    ("chroot", "PJ", 161, 0),
] + [("clone(%s)" % flag, "PJ", 56, value | 17, 0, 0, 0, 0) for flag, value in NEW.items()
      if flag != "NEWUSER"] + [
    ("clone3", "PJ", 435, 0, 0),
    ("x32:getpid", "J", X32 | 39),
    ("x32:unshare(NEWUSER)", "J", X32 | 272, NEW["NEWUSER"]),
    ("x32:mount", "J", X32 | 165, 0, 0, 0, 0, 0),
    ("ptrace(GETREGS,self)", "P", 101, 12, me, 0, 0),
    ("process_vm_readv", "P", 310, me, 0, 0, 0, 0, 0),
    ("process_vm_writev", "P", 311, me, 0, 0, 0, 0, 0),
    ("process_madvise", "P", 440, -1, 0, 0, 0, 0),
    ("pidfd_getfd", "P", 438, -1, 0, 0),
    ("kcmp", "P", 312, me, me, 0, 0, 0),
    ("perf_event_open", "P", 298, 0, 0, -1, -1, 0),
    ("bpf", "P", 321, 0, 0, 0),
    ("userfaultfd(USER_MODE_ONLY)", "P", 323, 1),
    ("keyctl", "P", 250, 0, 0),
    ("add_key", "P", 248, 0, 0, 0, 0, 0),
    ("request_key", "P", 249, 0, 0, 0, 0),
    ("init_module", "P", 175, 0, 0, 0),
    ("finit_module", "P", 313, -1, 0, 0),
    ("delete_module", "P", 176, 0, 0),
    ("kexec_load", "P", 246, 0, 0, 0, 0),
    ("kexec_file_load", "P", 320, -1, -1, 0, 0, 0),
    ("open_by_handle_at", "P", 304, -1, 0, 0),
    ("name_to_handle_at", "P", 303, -100, 0, 0, 0, 0),
    ("io_uring_setup", "P", 425, 1, 0),
    ("io_uring_enter", "P", 426, -1, 0, 0, 0, 0, 0),
    ("io_uring_register", "P", 427, -1, 0, 0, 0),
    ("reboot", "P", 169, 0, 0, 0, 0),
    ("swapon", "P", 167, 0, 0),
    ("swapoff", "P", 168, 0),
    ("acct", "P", 163, 0),
    ("quotactl", "P", 179, 0, 0, 0, 0),
    ("quotactl_fd", "P", 443, -1, 0, 0, 0),
    ("iopl(0)", "P", 172, 0),
    ("ioperm(off)", "P", 173, 0, 0, 0),
    ("lookup_dcookie", "P", 212, 0, 0, 0),
    ("vhangup", "P", 153),
    ("syslog(SIZE_BUFFER)", "P", 103, 10, 0, 0),
    ("personality(ADDR_NO_RANDOMIZE)", "P", 135, 0x0040000),
    # The job filter is an allow-list: socket families, narrowed calls, calls
    # refused for the budgets they would spend, and numbers newer than its list.
    ("socket(AF_NETLINK)", "J", 41, 16, 2, 0),
    ("socket(AF_PACKET)", "J", 41, 17, 2, 0),
    ("socket(AF_VSOCK)", "J", 41, 40, 1, 0),
    ("socket(AF_ALG)", "J", 41, 38, 5, 0),
    ("socket(AF_KEY)", "J", 41, 15, 3, 2),
    ("socket(AF_XDP)", "J", 41, 44, 3, 0),
    ("socketpair(AF_NETLINK)", "J", 53, 16, 2, 0, 0),
    ("ioctl(TIOCSTI)", "J", 16, -1, 0x5412, 0),
    ("ioctl(FIONREAD)", "J", 16, -1, 0x541B, 0),
    ("prctl(PR_GET_DUMPABLE)", "J", 157, 3, 0, 0, 0, 0),
    ("fcntl(F_SETPIPE_SZ)", "J", 72, -1, 1031, 1 << 20),
    ("fcntl(F_NOTIFY)", "J", 72, -1, 1026, 0),
    ("inotify_init1", "J", 294, 0),
    ("mq_open", "J", 240, 0, 0, 0, 0),
    ("io_setup", "J", 206, 0, 0),
    ("cachestat", "J", 451, -1, 0, 0, 0),
    ("fchmodat2", "J", 452, -1, 0, 0, 0),
    ("futex_wake", "J", 454, 0, 0, 0, 0),
    ("mseal", "J", 462, 0, 0, 0),
    ("file_getattr", "J", 468, -1, 0, 0, 0, 0),
    ("listns", "J", 470, 0, 0, 0, 0),
    ("nr471", "J", 471, -1, -1, -1),
    ("nr500", "J", 500),
    ("nr1000", "J", 1000),
    ("nr0x3fffffff", "J", 0x3FFFFFFF),
]
# The errno each call must get (EPERM unless named here).
WANT = {"clone3": "ENOSYS", "ioctl(TIOCSTI)": "ENOTTY", "ioctl(FIONREAD)": "ENOTTY",
        "prctl(PR_GET_DUMPABLE)": "EINVAL", "fcntl(F_SETPIPE_SZ)": "EINVAL",
        "fcntl(F_NOTIFY)": "EINVAL", "listns": "EPERM"}
WANT.update({name: "EAFNOSUPPORT" for name, *_ in CALLS if name.startswith("socket")})
WANT.update({name: "ENOSYS" for name in (
    "inotify_init1", "mq_open", "io_setup", "cachestat", "fchmodat2", "futex_wake", "mseal",
    "file_getattr", "nr471", "nr500", "nr1000", "nr0x3fffffff")})
RETURNS_FD = {"open_tree", "fsopen", "fsmount", "fspick", "open_tree_attr", "pidfd_getfd",
              "perf_event_open", "bpf", "userfaultfd(USER_MODE_ONLY)", "io_uring_setup",
              "inotify_init1"} | {name for name, *_ in CALLS if name.startswith("socket(")}
print("CALLS", len(CALLS))
for name, walls, number, *args in CALLS:
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    if r == 0 and name.startswith("clone"):
        os._exit(0)                   # the child of an allowed clone leaves at once
    code = ctypes.get_errno()
    if r > 0 and name.startswith("clone"):
        os.waitpid(r, 0); result = "forked"
    elif r >= 0 and name in RETURNS_FD:
        os.close(r); result = "fd"
    elif r == -1:
        result = errno.errorcode.get(code, str(code))
    else:
        result = "ret=%d" % r
    print("SYSCALL", name, walls, result, WANT.get(name, "EPERM"))
print("PERSONA_QUERY", libc.syscall(ctypes.c_long(135), ctypes.c_long(0xffffffff)))
