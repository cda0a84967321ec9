# The descriptor limit and the address-space limit, reached.
import errno, os
opened = []
try:
    while True:
        opened.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print("NOFILE", max(opened), errno.errorcode[e.errno])
for fd in opened:
    os.close(fd)
try:
    b = bytearray(2 << 30); print("ALLOC OK")
except MemoryError:
    print("ALLOC MemoryError")
