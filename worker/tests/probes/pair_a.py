# The first of two children of one zygote: leaves traces everywhere it can
# (files, an abstract socket, SysV shared memory), then holds them while the
# second runs; /tmp/probe-a-hold tells the test it is holding.
import ctypes, os, socket, time, numpy
libc = ctypes.CDLL(None, use_errno=True)
for path in ("/tmp/probe-a", "/dev/shm/probe-a", "probe-cwd-a"):
    with open(path, "w") as f:
        f.write("a")
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(b"\0pyexec-probe-TOKEN")
listener.listen(1)
print("SHM", libc.shmget(0x50524f42, 4096, 0o1000 | 0o600))   # IPC_CREAT
print("RNG", numpy.random.random())
print("HASH", hash("pyexec-probe"))
print("HOLD", flush=True)
open("/tmp/probe-a-hold", "w").close()
time.sleep(HOLD_S)
