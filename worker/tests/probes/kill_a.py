# Signals every process it can reach, while a second child of the same
# zygote waits for its job.
import errno, os
def kill(pid, sig):
    try:
        os.kill(pid, sig); return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
print("SEES", [pid for pid in range(2, 1 << 16) if kill(pid, 0) != "ESRCH"])
print("KILLALL", kill(-1, 9))
print("KILLGROUP", kill(0, 9))
print("SESSION", os.getsid(0), "GROUP", os.getpgid(0))
