# The second of two jobs at once, run while the first holds all it can: it
# must still queue signals (eight) and fork.
import ctypes, errno, os, resource, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Value(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
resource.setrlimit(resource.RLIMIT_NPROC, (40, 40))
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN + 1})
# Eight, not one: a slot of a shared budget freed for a moment elsewhere
# (another process's pending signal delivered) must not pass for a budget
# of this job's own.
failed = None
for _ in range(8):
    if libc.sigqueue(os.getpid(), signal.SIGRTMIN + 1, Value(1)) != 0:
        failed = errno.errorcode.get(ctypes.get_errno())
        break
print("SIGQUEUE", failed or "OK")
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0); print("FORK OK")
except OSError as e:
    print("FORK", errno.errorcode[e.errno])
r = libc.syscall(240, b"/pyexec-probe-b", os.O_CREAT | os.O_RDWR, 0o600, None)
print("MQ", "opened" if r >= 0 else errno.errorcode.get(ctypes.get_errno()))
