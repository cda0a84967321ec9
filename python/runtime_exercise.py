"""A job that exercises the whole runtime a script can reach, and reports what failed.

Two uses, one file:
- the allow-list's derivation (scripts/trace-syscalls.sh) runs it as a job
  under strace, so every system call the runtime makes is seen;
- worker/tests/runtime_imports.rs runs it as jobs of the real sandbox
  under the job's own filter and limits in both modes, and on the host as
  the baseline: a module that imports outside but not inside, or a smoke
  call that fails inside, is a failure.

Sent as a job's source (never imported by the runner): the top level only
defines; `exercise()` returns the report, and running the file directly
prints it as JSON. Progress goes to stderr line by line, so a process that
dies mid-walk still says where.

The walk imports every public module (no path component starting with "_")
of numpy, pandas and matplotlib (with mpl_toolkits, which ships with it).
Left out by rule: the libraries' own test suites (`tests` packages and
`conftest` modules: they need pytest, which the sandbox does not carry).
A module that fails to import outside the jail too is excluded with its
error as the reason; the caller compares the two runs.
"""

import errno
import json
import os
import sys

PACKAGES = ("numpy", "pandas", "matplotlib", "mpl_toolkits")
TEST_PARTS = {"tests", "conftest"}
OUTPUTS = os.environ.get("PYEXEC_OUTPUTS_DIR") or "/tmp/outputs"


def progress(text):
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def error_line(exc):
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    return f"{type(exc).__name__}{'[' + name + ']' if name else ''}: {exc}"[:300]


# ------------------------------------------------------------------ the walk


def public_modules(packages=PACKAGES):
    """Sorted names of the public modules of `packages`, test suites left out."""
    import importlib
    import pkgutil

    names = set()
    for package in packages:
        try:
            module = importlib.import_module(package)
        except Exception:
            continue
        names.add(package)
        for info in pkgutil.walk_packages(module.__path__, package + ".",
                                          onerror=lambda name: None):
            parts = info.name.split(".")
            if any(p.startswith("_") for p in parts) or TEST_PARTS & set(parts):
                continue
            names.add(info.name)
    return sorted(names)


# The audit events a trail keeps: the files, calls and resources an import
# reaches for (what a jail can refuse), not the interpreter's own bookkeeping.
TRAIL_PREFIXES = ("open", "os.", "socket.", "ctypes.", "mmap.", "subprocess.", "shutil.",
                  "tempfile.", "fcntl.", "resource.", "signal.", "sqlite3.", "glob.")


def import_all(names, trail=False):
    """{module: None if it imported, else the error line}. With trail (it
    installs an audit hook for good, so once per process), a failure's line
    ends with the last files and calls that import made: what it needed."""
    import importlib

    recent = []
    if trail:
        def hook(event, args):
            if event.startswith(TRAIL_PREFIXES):
                recent.append(f"{event}({str(args[0])[:120] if args else ''})")
                del recent[:-6]

        sys.addaudithook(hook)
    results = {}
    for name in names:
        progress(f"import {name}")
        recent.clear()
        try:
            importlib.import_module(name)
            results[name] = None
        except BaseException as exc:  # SystemExit from a module is a failure, not our end
            results[name] = error_line(exc) + (f" [after: {'; '.join(recent)}]" if recent else "")
    return results


# ------------------------------------------------------------------ smoke calls

SMOKE = []


def smoke(function):
    SMOKE.append(function)
    return function


@smoke
def numpy_linalg():
    import numpy as np
    a = np.arange(90000, dtype=float).reshape(300, 300) / 1e4 + np.eye(300)
    assert np.allclose(np.linalg.inv(a) @ a, np.eye(300), atol=1e-6)
    np.linalg.svd(a[:50, :50])
    np.linalg.eig(a[:30, :30])
    np.linalg.solve(a, np.ones(300))
    np.linalg.det(a[:10, :10])


@smoke
def numpy_fft():
    import numpy as np
    x = np.sin(np.linspace(0, 20, 4096))
    assert np.allclose(np.fft.ifft(np.fft.fft(x)).real, x)
    np.fft.rfft(x)
    np.fft.fft2(np.ones((64, 64)))


@smoke
def numpy_random():
    import numpy as np
    rng = np.random.default_rng()
    rng.normal(size=1000)
    rng.choice(10, 5)
    np.random.seed(1)
    np.random.RandomState(2).rand(3)
    np.random.random(3)


@smoke
def numpy_files():
    import io
    import numpy as np
    buffer = io.BytesIO()
    np.save(buffer, np.arange(10))
    buffer.seek(0)
    assert np.load(buffer).sum() == 45
    np.savetxt("/tmp/array.txt", np.eye(3))
    np.loadtxt("/tmp/array.txt")
    mm = np.memmap("/tmp/array.mm", dtype="float64", mode="w+", shape=(1000,))
    mm[:] = 1.0
    mm.flush()
    del mm
    big = np.ones(8 << 20, dtype=np.uint8)  # large enough for numpy's hugepage madvise
    assert int(big.sum()) == 8 << 20


@smoke
def pandas_basics():
    import io
    import pandas as pd
    frame = pd.read_csv(io.StringIO("k,v,t\na,1,2024-01-01\nb,2,2024-01-02\na,3,2024-01-03\n"))
    frame["t"] = pd.to_datetime(frame["t"])
    assert frame.groupby("k")["v"].sum().to_dict() == {"a": 4, "b": 2}
    frame.merge(frame, on="k")
    frame.set_index("t")["v"].rolling(2).mean()
    frame.set_index("t")["v"].resample("D").sum()
    frame.pivot_table(index="k", values="v")
    frame.describe()
    repr(frame)
    pd.Timestamp("2024-06-01 12:00", tz="Europe/Paris").tz_convert("UTC")
    frame["k"].astype("category")
    frame["k"].str.upper()
    frame.query("v > 1")


@smoke
def pandas_io():
    import sqlite3
    import pandas as pd
    frame = pd.DataFrame({"a": range(100), "b": [str(i) for i in range(100)]})
    for suffix in ("csv", "csv.gz", "csv.bz2", "csv.xz", "csv.zip"):
        path = f"/tmp/frame.{suffix}"
        frame.to_csv(path, index=False)
        assert len(pd.read_csv(path)) == 100
    frame.to_json("/tmp/frame.json")
    pd.read_json("/tmp/frame.json")
    frame.to_pickle("/tmp/frame.pkl")
    pd.read_pickle("/tmp/frame.pkl")
    with sqlite3.connect(":memory:") as connection:
        frame.to_sql("t", connection)
        pd.read_sql("select count(*) from t", connection)
    frame.to_csv(os.path.join(OUTPUTS, "frame.csv"), index=False)


@smoke
def matplotlib_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    figure, axes = plt.subplots(1, 2)
    axes[0].plot(np.arange(1000), np.sin(np.arange(1000) / 50))
    axes[0].set_title(r"$\alpha^2$ sine")
    image = axes[1].imshow(np.random.default_rng().random((20, 20)))
    figure.colorbar(image)
    for kind in ("png", "svg", "pdf"):
        figure.savefig(os.path.join(OUTPUTS, f"figure.{kind}"))
    plt.close(figure)
    three_d = plt.figure().add_subplot(projection="3d")
    three_d.plot([0, 1], [0, 1], [0, 1])
    plt.savefig("/tmp/three-d.png")
    plt.close("all")


@smoke
def pandas_plot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    pd.DataFrame({"a": [1, 3, 2]}).plot()
    plt.savefig("/tmp/pandas-plot.png")
    plt.close("all")


def _square(x):
    return x * x


@smoke
def multiprocessing_fork():
    import math
    import multiprocessing
    with multiprocessing.Pool(2) as pool:
        assert pool.map(math.factorial, range(6)) == [1, 1, 2, 6, 24, 120]
        assert pool.map(_square, range(4)) == [0, 1, 4, 9]
    queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=queue.put, args=(42,))
    process.start()
    assert queue.get(timeout=20) == 42
    process.join()
    lock = multiprocessing.Lock()
    with lock:
        pass
    multiprocessing.Semaphore(2).acquire()
    multiprocessing.Value("i", 3)


@smoke
def multiprocessing_spawn_and_forkserver():
    import multiprocessing
    for method in ("spawn", "forkserver"):
        context = multiprocessing.get_context(method)
        with context.Pool(1) as pool:
            assert pool.map(abs, [-1, -2]) == [1, 2], method


@smoke
def multiprocessing_shared_memory_and_manager():
    import multiprocessing
    from multiprocessing import shared_memory
    block = shared_memory.SharedMemory(create=True, size=4096)
    block.buf[0] = 7
    block.close()
    block.unlink()
    with multiprocessing.Manager() as manager:
        shared = manager.dict()
        shared["a"] = 1
        assert dict(shared) == {"a": 1}


@smoke
def concurrent_futures():
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(abs, [-1, -2])) == [1, 2]
    with ProcessPoolExecutor(2) as pool:
        assert list(pool.map(abs, [-1, -2])) == [1, 2]


@smoke
def threads():
    import threading
    results = []
    event = threading.Event()
    workers = [threading.Thread(target=lambda i=i: (results.append(i), event.wait(5)))
               for i in range(8)]
    for worker in workers:
        worker.start()
    event.set()
    for worker in workers:
        worker.join()
    assert sorted(results) == list(range(8))
    timer = threading.Timer(0.01, results.append, args=("timer",))
    timer.start()
    timer.join()
    local = threading.local()
    local.x = 1


@smoke
def fork_and_wait():
    import signal
    import time
    child = os.fork()
    if child == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 7
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    os.kill(child, signal.SIGTERM)
    os.wait4(child, 0)
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitid(os.P_PID, child, os.WEXITED)
    os.getpgid(0)
    os.getsid(0)


@smoke
def subprocess_of_python():
    import subprocess
    done = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "42", done
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], {})
    os.waitpid(pid, 0)
    # A fresh interpreter that imports the runtime, as a "spawn" start method's
    # worker does: the calls of numpy's, pandas' and matplotlib's first import.
    fresh = ("import matplotlib; matplotlib.use('Agg'); import numpy, pandas, "
             "matplotlib.pyplot as plt; plt.plot([1, 2]); plt.savefig('/tmp/fresh.png')")
    done = subprocess.run([sys.executable, "-I", "-c", fresh], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]


@smoke
def tempfiles():
    import shutil
    import tempfile
    with tempfile.TemporaryFile() as handle:  # O_TMPFILE
        handle.write(b"x")
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as handle:
        handle.write("x")
    directory = tempfile.mkdtemp()
    os.makedirs(os.path.join(directory, "a", "b"))
    with open(os.path.join(directory, "a", "f"), "w") as handle:
        handle.write("x")
    shutil.copytree(directory, directory + "-copy")
    shutil.rmtree(directory)
    shutil.rmtree(directory + "-copy")
    with tempfile.TemporaryDirectory() as name:
        open(os.path.join(name, "x"), "w").close()


@smoke
def output_files():
    os.makedirs(os.path.join(OUTPUTS, "nested", "deeper"), exist_ok=True)
    with open(os.path.join(OUTPUTS, "notes.txt"), "w") as handle:
        handle.write("hello\n")
    with open(os.path.join(OUTPUTS, "nested", "deeper", "data.bin"), "wb") as handle:
        handle.write(os.urandom(1000))


@smoke
def time_and_sleep():
    import datetime
    import time
    started = time.monotonic()
    time.sleep(0.01)
    assert time.monotonic() - started >= 0.009
    time.time(), time.perf_counter(), time.process_time(), time.thread_time()
    time.clock_getres(time.CLOCK_MONOTONIC)
    time.strftime("%Y-%m-%d", time.localtime())
    datetime.datetime.now(datetime.timezone.utc).astimezone()
    import zoneinfo
    datetime.datetime(2024, 6, 1, tzinfo=zoneinfo.ZoneInfo("America/New_York")).utcoffset()


@smoke
def signals():
    import faulthandler
    import signal
    import tempfile
    import time
    seen = []
    signal.signal(signal.SIGUSR1, lambda *_: seen.append("usr1"))
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.signal(signal.SIGALRM, lambda *_: seen.append("alarm"))
    signal.setitimer(signal.ITIMER_REAL, 0.01)
    deadline = time.monotonic() + 5
    while "alarm" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    signal.alarm(0)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    os.kill(os.getpid(), signal.SIGUSR2)
    assert signal.sigpending() == {signal.SIGUSR2}
    assert signal.sigwait({signal.SIGUSR2}) == signal.SIGUSR2
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
    signal.pthread_kill(__import__("threading").get_ident(), 0)
    assert seen[:2] == ["usr1", "alarm"], seen
    with tempfile.TemporaryFile("w+") as log:
        faulthandler.enable(log)
        faulthandler.dump_traceback(log)
        faulthandler.disable()
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)


@smoke
def files_and_directories():
    import fcntl
    import glob
    import pathlib
    import shutil
    base = "/tmp/files"
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, "a.txt")
    with open(path, "w+") as handle:
        handle.write("hello")
        handle.flush()
        os.fsync(handle.fileno())
        os.fdatasync(handle.fileno())
        handle.seek(0)
        assert handle.read() == "hello"
        fcntl.flock(handle, fcntl.LOCK_EX)
        fcntl.lockf(handle, fcntl.LOCK_UN)
        os.set_blocking(handle.fileno(), True)
        os.posix_fallocate(handle.fileno(), 0, 4096)
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        os.ftruncate(handle.fileno(), 5)
    os.truncate(path, 5)
    os.stat(path), os.lstat(path), os.statvfs(base), os.access(path, os.R_OK)
    os.chmod(path, 0o644)
    os.utime(path, (0, 0))
    os.link(path, path + ".hard")
    os.symlink(path, path + ".soft")
    assert os.readlink(path + ".soft") == path
    os.rename(path + ".hard", path + ".moved")
    os.replace(path + ".moved", path + ".replaced")
    shutil.copy2(path, path + ".copy2")   # copystat: utime, chmod, listxattr
    shutil.copyfile(path, path + ".copy")  # sendfile
    shutil.move(path + ".copy", path + ".moved")
    os.mkfifo(os.path.join(base, "fifo"))
    list(os.walk(base)), glob.glob(base + "/*"), list(pathlib.Path(base).rglob("*"))
    with os.scandir(base) as entries:
        [entry.stat() for entry in entries]
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    os.stat("a.txt", dir_fd=fd)
    os.close(fd)
    cwd = os.getcwd()
    os.chdir(base)
    os.chdir(cwd)
    os.umask(os.umask(0o022))
    with open(path, "rb") as source, open(path + ".range", "wb") as target:
        os.copy_file_range(source.fileno(), target.fileno(), 5)
    shutil.rmtree(base)


@smoke
def descriptors_and_polling():
    import mmap
    import select
    import selectors
    read_end, write_end = os.pipe()
    os.write(write_end, b"x")
    assert select.select([read_end], [], [], 1)[0] == [read_end]
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    assert poller.poll(1000)
    epoll = select.epoll()
    epoll.register(read_end, select.EPOLLIN)
    assert epoll.poll(1)
    epoll.close()
    with selectors.DefaultSelector() as selector:
        selector.register(read_end, selectors.EVENT_READ)
        selector.select(1)
    copy = os.dup(read_end)
    os.dup2(read_end, copy)
    os.close(copy)
    os.close(read_end)
    os.close(write_end)
    r2, w2 = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    anon = mmap.mmap(-1, 1 << 20)
    anon[:5] = b"hello"
    anon.madvise(mmap.MADV_DONTNEED)
    anon.close()
    with open("/tmp/mapped", "wb") as handle:
        handle.write(b"\0" * 4096)
    with open("/tmp/mapped", "r+b") as handle:
        mapped = mmap.mmap(handle.fileno(), 0)
        mapped[0:1] = b"x"
        mapped.flush()
        mapped.close()
    fd = os.eventfd(0)
    os.eventfd_write(fd, 1)
    assert os.eventfd_read(fd) == 1
    os.close(fd)
    fd = os.memfd_create("exercise")
    os.write(fd, b"x")
    os.close(fd)
    pidfd = os.pidfd_open(os.getpid())
    os.close(pidfd)
    os.close(r2)
    os.close(w2)
    os.isatty(1)
    try:
        os.get_terminal_size()
    except OSError:
        pass


@smoke
def sockets():
    import array
    import socket
    a, b = socket.socketpair()
    a.sendall(b"ping")
    assert b.recv(4) == b"ping"
    a.sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0]))])
    message, ancillary, _, _ = b.recvmsg(16, socket.CMSG_SPACE(4))
    for _, _, data in ancillary:
        os.close(array.array("i", data)[0])
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    a.close()
    b.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("/tmp/exercise.sock")
    listener.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect("/tmp/exercise.sock")
    server, _ = listener.accept()
    server.sendall(b"x")
    assert client.recv(1) == b"x"
    for s in (server, client, listener):
        s.close()
    os.unlink("/tmp/exercise.sock")
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram.bind(b"\0pyexec-exercise")
    datagram.close()
    for family in (socket.AF_INET, socket.AF_INET6):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0))
        except OSError as exc:  # loopback is down in the jail: the kernel's answer
            assert exc.errno in (errno.EADDRNOTAVAIL, errno.ENETUNREACH), exc
        s.close()
    socket.gethostname()
    try:
        socket.getaddrinfo("localhost", 80)
    except OSError:
        pass


@smoke
def asyncio_loop():
    import asyncio

    async def main():
        await asyncio.sleep(0.01)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print(1)", stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        assert out.strip() == b"1"
        return await asyncio.gather(*(asyncio.sleep(0, result=i) for i in range(3)))

    assert asyncio.run(main()) == [0, 1, 2]


@smoke
def process_facts():
    import platform
    import resource
    import uuid
    os.cpu_count(), os.sched_getaffinity(0), os.times(), os.uname()
    os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 1)
    os.sched_yield()
    os.getresuid(), os.getresgid(), os.getgroups(), os.getppid()
    resource.getrusage(resource.RUSAGE_SELF)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    platform.platform(), platform.machine(), platform.python_version()
    uuid.uuid4(), uuid.uuid1()
    os.urandom(32)
    os.getrandom(16)
    import secrets
    secrets.token_hex(8)


@smoke
def stdlib_data():
    import bz2
    import csv
    import decimal
    import gzip
    import hashlib
    import io
    import locale
    import lzma
    import pickle
    import sqlite3
    import statistics
    import tarfile
    import zipfile
    import zlib
    data = b"pyexec" * 1000
    for codec in (zlib, bz2, lzma, gzip):
        assert codec.decompress(codec.compress(data)) == data
    hashlib.sha256(data).hexdigest()
    pickle.loads(pickle.dumps({"a": [1, 2]}))
    csv.writer(io.StringIO()).writerow([1, 2])
    decimal.Decimal("1.1") + decimal.Decimal("2.2")
    statistics.median([1, 3, 2])
    locale.setlocale(locale.LC_ALL, "")
    with zipfile.ZipFile("/tmp/x.zip", "w") as archive:
        archive.writestr("a.txt", "a")
    with tarfile.open("/tmp/x.tar.gz", "w:gz") as archive:
        archive.add("/tmp/x.zip", arcname="x.zip")
    with sqlite3.connect("/tmp/x.db") as connection:
        connection.execute("pragma journal_mode=wal")
        connection.execute("create table if not exists t (a)")
        connection.execute("insert into t values (1)")
    import ctypes
    ctypes.CDLL("libm.so.6").cos


@smoke
def memory():
    import gc
    blocks = [bytearray(1 << 20) for _ in range(64)]
    del blocks
    gc.collect()
    big = bytearray(32 << 20)
    big[-1] = 1
    del big

    def deep(n):
        return 0 if n == 0 else 1 + deep(n - 1)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    deep(15000)
    sys.setrecursionlimit(limit)


def run_smoke():
    """{smoke call: None if it worked, else the error line}."""
    os.makedirs(OUTPUTS, exist_ok=True)
    results = {}
    for function in SMOKE:
        progress(f"smoke {function.__name__}")
        try:
            function()
            results[function.__name__] = None
        except BaseException as exc:
            results[function.__name__] = error_line(exc)
    return results


def exercise(walk=True, calls=True, packages=PACKAGES):
    """The report: {"imports": {module: error or None}, "smoke": {call: error or None}}."""
    report = {}
    if walk:
        report["imports"] = import_all(public_modules(packages))
    if calls:
        report["smoke"] = run_smoke()
    return report


if __name__ == "__main__":
    print(json.dumps(exercise(walk="--no-walk" not in sys.argv,
                              calls="--no-smoke" not in sys.argv), sort_keys=True))
