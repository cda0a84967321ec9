"""Builds matplotlib's font list once, at install time (scripts/setup.sh and
the Dockerfile), into the sandbox venv, which the jail binds read-only.

The runner's warm-up loads it from there (pyexec_runner/figures.py), so no
job builds or writes a font cache. Only the fonts matplotlib ships are
listed: the jail sees none of the host's, and a listed font that is missing
would make matplotlib rebuild the list inside a job.

Run with the sandbox venv's python: `python3 build_font_cache.py`.
"""

import os
import sys
import tempfile


def font_cache_dir():
    """Where the runner looks for the font list (the same rule as figures.py)."""
    return os.path.join(sys.prefix, "share", "pyexec-matplotlib")


def build(target):
    with tempfile.TemporaryDirectory() as scratch:
        # Importing font_manager builds a throw-away list in scratch first.
        os.environ["MPLCONFIGDIR"] = scratch
        import matplotlib.font_manager as font_manager

        system_fonts = font_manager.findSystemFonts

        def bundled_only(fontpaths=None, fontext="ttf"):
            return system_fonts(fontpaths, fontext) if fontpaths else []

        font_manager.findSystemFonts = bundled_only
        manager = font_manager.FontManager()
        font_manager.findSystemFonts = system_fonts
        os.makedirs(target, exist_ok=True)
        path = os.path.join(target, f"fontlist-v{font_manager.FontManager.__version__}.json")
        font_manager.json_dump(manager, path)
        loaded = font_manager.json_load(path)
        if not loaded.ttflist:
            sys.exit(f"{path}: no fonts listed")
        os.chmod(target, 0o755)
        os.chmod(path, 0o644)
    return path


if __name__ == "__main__":
    print(build(font_cache_dir()))
