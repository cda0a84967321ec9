# The second child: looks for the first one's traces.
import ctypes, errno, os, socket, numpy
libc = ctypes.CDLL(None, use_errno=True)
print("TMP", sorted(os.listdir("/tmp")))
print("OUTPUTS", sorted(os.listdir("/tmp/outputs")))
print("DEVSHM", sorted(os.listdir("/dev/shm")))
print("CWDLIST", sorted(os.listdir(".")))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(b"\0pyexec-probe-TOKEN"); print("ABSTRACT OK")
except OSError as e:
    print("ABSTRACT", errno.errorcode[e.errno])
r = libc.shmget(0x50524f42, 0, 0)
print("SHM", errno.errorcode[ctypes.get_errno()] if r == -1 else "found")
print("RNG", numpy.random.random())
print("HASH", hash("pyexec-probe"))
