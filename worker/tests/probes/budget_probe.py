# The second of two jobs at once, run while the first holds all it can: it
# must still queue a signal and fork.
import ctypes, errno, os, resource, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Value(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
resource.setrlimit(resource.RLIMIT_NPROC, (40, 40))
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN + 1})
r = libc.sigqueue(os.getpid(), signal.SIGRTMIN + 1, Value(1))
print("SIGQUEUE", "OK" if r == 0 else errno.errorcode.get(ctypes.get_errno()))
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0); print("FORK OK")
except OSError as e:
    print("FORK", errno.errorcode[e.errno])
r = libc.syscall(240, b"/pyexec-probe-b", os.O_CREAT | os.O_RDWR, 0o600, None)
print("MQ", "opened" if r >= 0 else errno.errorcode.get(ctypes.get_errno()))
