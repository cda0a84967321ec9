# Every process forks until refused, and reports its first refused fork with
# its errno as it happens (a slow machine may kill a process long before any
# later report). Runs until the test kills it (BOMB_S is far beyond that),
# once a report is in.
import errno, os, time
forks = 0
refused = False
t = time.time()
while time.time() - t < BOMB_S:
    try:
        if os.fork() == 0:
            forks = 0; refused = False; t = time.time()      # every child forks too
            continue
        forks += 1
    except OSError as e:
        if not refused:
            refused = True
            name = errno.errorcode.get(e.errno, str(e.errno))
            report = f"pid {os.getpid()} forks {forks} refused {name}\n".encode()
            # One write each, so that no other process's report lands inside
            # it: on stdout for the checks, in /tmp/refused for the test to
            # see from outside that a report was made.
            os.write(1, report)
            try:
                fd = os.open("/tmp/refused", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.write(fd, report)
                os.close(fd)
            except OSError:
                pass
        time.sleep(0.01)
