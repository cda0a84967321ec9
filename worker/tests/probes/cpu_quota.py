# Two CPU burners for 2 s: under a 1-CPU quota they get about one CPU.
import multiprocessing, resource, time
def burn(seconds):
    t = time.time()
    while time.time() - t < seconds:
        pass
t = time.time()
ps = [multiprocessing.Process(target=burn, args=(2,)) for _ in range(2)]
[p.start() for p in ps]; [p.join() for p in ps]
wall = time.time() - t
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
used = usage.ru_utime + usage.ru_stime
print("CPU wall=%.2f cpu=%.2f ratio=%.2f" % (wall, used, used / wall))
