# Where a script can write, how much, and whether it can exec what it wrote.
import errno, os
def try_write(path, size=10):
    try:
        with open(path, "wb") as f:
            f.write(b"x" * size)
        return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
for p in ("/x", "/usr/x", "/usr/lib/python3.11/x", "/opt/x", "/opt/pyexec/sandbox-venv/x",
          "/opt/pyexec/sandbox-venv/lib/python3.11/site-packages/x", "/pyexec/x", "/dev/x",
          "/tmp/x", "/dev/shm/x"):
    print("WRITE", p, try_write(p))
print("WRITE devnull", try_write("/dev/null"))
try:
    os.mkdir("/newdir"); print("MKDIR / OK")
except OSError as e:
    print("MKDIR /", errno.errorcode[e.errno])
for p in ("/tmp", "/dev/shm"):
    st = os.statvfs(p)
    print("SIZE", p, st.f_blocks * st.f_frsize)
print("BIG", try_write("/tmp/big", 11 * 1024 * 1024), os.path.getsize("/tmp/big"))
os.unlink("/tmp/big")
result = "OK"
for i in range(8):                       # 8 x 9 MiB files, each under the 10 MiB fsize limit
    r = try_write("/tmp/fill%d" % i, 9 * 1024 * 1024)
    if r != "OK":
        result = "%s at file %d" % (r, i); break
print("FILLTMP", result)
for i in range(8):
    try: os.unlink("/tmp/fill%d" % i)
    except OSError: pass
with open("/tmp/t.sh", "w") as f:
    f.write("#!/usr/bin/python3.11\n")
os.chmod("/tmp/t.sh", 0o755)
try:
    os.execv("/tmp/t.sh", ["/tmp/t.sh"])
except OSError as e:
    print("EXECTMP", errno.errorcode[e.errno])
