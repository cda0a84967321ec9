"""matplotlib in the sandbox: imported by warm-up with the font list built
at install time, and every figure a script leaves open saved as a PNG in the
outputs folder once main() has returned."""

import io
import os
import sys

from .private import own_builtins

# Taken before any script runs (see private.py).
_os_open = os.open
_os_fdopen = os.fdopen
_os_unlink = os.unlink
_os_write = os.write
_path_join = os.path.join
_sorted = sorted
own_builtins(globals())


# python/build_font_cache.py writes the font list here at install time; the
# venv is bound read-only into the jail, so no job can build or change it.
FONT_CACHE_DIR = os.path.join(sys.prefix, "share", "pyexec-matplotlib")
# Never follows a symlink, never replaces a file the script left.
_O_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A script that left more open figures than this gets the first ones only;
# the answer's file caps are smaller anyway.
MAX_FIGURES = 1000

# pyplot's figure registry, taken by warm_up; None when matplotlib is absent.
_GCF = None


def warm_up():
    """Import pyplot on the Agg backend with the install-time font list, and
    draw one figure so the fonts and renderer a plot needs are loaded."""
    global _GCF
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    _load_font_manager(lambda: __import__("matplotlib.font_manager"))
    import matplotlib.pyplot as pyplot
    from matplotlib._pylab_helpers import Gcf

    figure, axes = pyplot.subplots()
    axes.plot([0, 1, 2], [0, 1, 0], label="warm")
    axes.set_title("warm-up")
    axes.legend()
    figure.savefig(io.BytesIO(), format="png")
    pyplot.close("all")
    # The fonts just drawn with hold their files open, and the job process
    # closes every descriptor it did not open itself before the script runs
    # (fork mode's children drop this cache at fork anyway): a job opens them
    # again, which costs far less than the import and drawing warmed here.
    matplotlib.font_manager._get_font.cache_clear()
    _GCF = Gcf
    return matplotlib.__version__


def warm_on_import():
    """Spawn mode: matplotlib is left for the script to import (a jail that
    pays its import for every job would pay it for the scripts that never
    plot too), with the install-time font list, so a plotting job still
    builds and writes no font cache. (The jail's MPLBACKEND picks Agg.)"""
    sys.meta_path.insert(0, _FontListFinder())


def _load_font_manager(load):
    """Run load() (which imports matplotlib.font_manager) with the font list
    read from the read-only install-time copy: matplotlib looks for it in
    get_cachedir(), which must stay writable (MPLCONFIGDIR=/tmp) for the rest."""
    import matplotlib

    writable_cachedir = matplotlib.get_cachedir
    matplotlib.get_cachedir = lambda: FONT_CACHE_DIR
    try:
        return load()
    finally:
        matplotlib.get_cachedir = writable_cachedir


class _FontListFinder:
    """Finds nothing itself: when a script first imports
    matplotlib.font_manager, it has the normal finders find it and loads it
    through _load_font_manager. Removes itself on that first use."""

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.font_manager":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load_module = spec.loader.exec_module
            spec.loader.exec_module = lambda module: _load_font_manager(
                lambda: load_module(module))
        return spec


def _figure_registry():
    """pyplot's figure registry: taken at warm-up, or found once a script
    imported pyplot itself (spawn mode); None if neither."""
    if _GCF is not None:
        return _GCF
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    return getattr(helpers, "Gcf", None)


def save_open_figures(folder):
    """Save every figure pyplot still holds to folder as figure-1.png, … (in
    the order of their figure numbers, which pyplot hands out in creation
    order), skipping any name already taken. A figure that fails to save is
    reported on stderr (the job's) and left out; the job still succeeds."""
    registry = _figure_registry()
    if registry is None:
        return
    try:
        managers = _sorted(registry.get_all_fig_managers(), key=_figure_number)
    except BaseException as exc:
        _report(f"open figures could not be listed: {_describe(exc)}")
        return
    index = 0
    for manager in managers[:MAX_FIGURES]:
        try:
            figure = manager.canvas.figure
        except BaseException:
            continue
        index, fd, name = _new_figure_file(folder, index)
        if fd is None:
            _report(f"figure {manager.num!r} could not be saved: {name}")
            return
        try:
            with _os_fdopen(fd, "wb") as file:
                figure.savefig(file, format="png")
        except BaseException as exc:
            try:
                _os_unlink(_path_join(folder, name))
            except OSError:
                pass
            _report(f"{name} could not be saved: {_describe(exc)}")


def _figure_number(manager):
    number = manager.num
    return number if type(number) is int else 0


def _new_figure_file(folder, index):
    """(the index used, an fd open on a new file, its name); the fd is None
    (and the name the error) when no file could be created."""
    while True:
        index += 1
        name = f"figure-{index}.png"
        try:
            return index, _os_open(_path_join(folder, name), _O_NEW_FILE, 0o644), name
        except FileExistsError:
            continue
        except OSError as exc:
            return index, None, _describe(exc)


def _describe(exc):
    try:
        return f"{type(exc).__name__}: {exc}"[:500]
    except BaseException:
        return type(exc).__name__


def _report(line):
    try:
        _os_write(2, f"pyexec: {line}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass
