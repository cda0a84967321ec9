# The first of two jobs at once: holds every queued signal, process and POSIX
# message queue it can get, then waits; /tmp/budget-hold tells the test it is
# holding. It lowers its own RLIMIT_NPROC to 40 first (any process may), so
# that this budget, not the pids cgroup, is the one it reaches.
import ctypes, errno, os, resource, signal, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Value(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
resource.setrlimit(resource.RLIMIT_NPROC, (40, 40))
print("LIMITS", [resource.getrlimit(getattr(resource, "RLIMIT_" + n))[1]
                 for n in ("SIGPENDING", "MSGQUEUE", "NPROC")])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN})
queued = 0
while queued < 200000 and libc.sigqueue(os.getpid(), signal.SIGRTMIN, Value(queued)) == 0:
    queued += 1
print("QUEUED", queued, errno.errorcode.get(ctypes.get_errno()))
children = []
while len(children) < 1000:
    try:
        pid = os.fork()
    except OSError as e:
        print("FORKS", len(children), errno.errorcode[e.errno]); break
    if pid == 0:
        time.sleep(120); os._exit(0)
    children.append(pid)
queues = 0
while queues < 100:
    name = b"/pyexec-probe-%d" % queues
    if libc.syscall(240, name, os.O_CREAT | os.O_RDWR, 0o600, None) < 0:   # mq_open
        break
    queues += 1
print("MQ", queues, errno.errorcode.get(ctypes.get_errno()))
print("HOLD", flush=True)
open("/tmp/budget-hold", "w").close()
time.sleep(HOLD_S)
