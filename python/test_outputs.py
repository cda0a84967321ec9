"""Tests for pyexec_runner/outputs.py: the files a script leaves in its
outputs folder come back in the result frame, within the caps, and nothing
but regular files reached without a symlink.

Through the real runner (runner_harness.py), plus the media-type table
directly. Run from the repo root:
    /opt/pyexec/sandbox-venv/bin/python3 -m unittest discover -s python -v
"""

import unittest

from pyexec_runner import outputs
from runner_harness import dedent, files_of, run_script, run_scripts


class OutputFilesTest(unittest.TestCase):
    """What a script leaves in its outputs folder comes back, within caps."""

    def test_a_pandas_csv_round_trips_byte_for_byte_and_oddities_are_skipped(self):
        finished = run_script(self, dedent("""
            import os, stat
            import pandas as pd
            OUT = os.environ["PYEXEC_OUTPUTS_DIR"]
            START = (sorted(os.listdir(OUT)), stat.S_IMODE(os.stat(OUT).st_mode))
            def main():
                df = pd.DataFrame({"city": ["Zürich", "Oslo"], "t": [1.5, -3.0]})
                df.to_csv(os.path.join(OUT, "report.csv"), index=False)
                os.makedirs(os.path.join(OUT, "sub", "deeper"))
                with open(os.path.join(OUT, "sub", "deeper", "raw.bin"), "wb") as f:
                    f.write(bytes(range(256)))
                with open(os.path.join(OUT, "notes.TXT"), "w") as f:
                    f.write("hi")
                os.symlink("/etc", os.path.join(OUT, "etc"))
                os.symlink("/etc/hostname", os.path.join(OUT, "hostname"))
                os.symlink(os.path.join(OUT, "report.csv"), os.path.join(OUT, "again.csv"))
                os.mkfifo(os.path.join(OUT, "fifo"))
                return {"start": START, "csv": df.to_csv(index=False)}
        """))
        result = finished.frame["result"]
        self.assertEqual(result["start"], [[], 0o777])
        files = files_of(self, finished)
        self.assertEqual(list(files), ["notes.TXT", "report.csv", "sub/deeper/raw.bin"])
        self.assertEqual(files["report.csv"], (result["csv"].encode(), "text/csv"))
        self.assertEqual(files["sub/deeper/raw.bin"],
                         (bytes(range(256)), "application/octet-stream"))
        self.assertEqual(files["notes.TXT"], (b"hi", "text/plain"))
        self.assertIs(finished.frame["files_truncated"], False)
        self.assertEqual(finished.frame["files_omitted"], [])

    def test_no_files_no_members_and_an_error_carries_none(self):
        none, failed = run_scripts(self, [
            "def main():\n    return {}\n",
            dedent("""
                import os
                def main():
                    open(os.path.join(os.environ["PYEXEC_OUTPUTS_DIR"], "a.txt"), "w").close()
                    return {"x": float("nan")}
            """),
        ])
        self.assertEqual(none.raw, b'{"type":"result","result":{}}')
        self.assertEqual(failed.frame["kind"], "invalid_result")
        self.assertNotIn("files", failed.frame)

    def test_beyond_the_caps_files_are_omitted_and_named(self):
        script = dedent("""
            import os
            OUT = os.environ["PYEXEC_OUTPUTS_DIR"]
            def main():
                for name, size in [("a", 10), ("b", 300), ("c", 10), ("d", 10), ("e", 1)]:
                    with open(os.path.join(OUT, name), "wb") as f:
                        f.write(b"x" * size)
                return {}
        """)
        by_bytes, by_count = run_scripts(self, [script, script], max_files_bytes=100)
        # 300 bytes don't fit what is left of 100; the smaller ones after it do.
        self.assertEqual(list(files_of(self, by_bytes)), ["a", "c", "d", "e"])
        self.assertIs(by_bytes.frame["files_truncated"], True)
        self.assertEqual(by_bytes.frame["files_omitted"], ["b"])
        counted = run_script(self, script, max_files=2)
        self.assertEqual(list(files_of(self, counted)), ["a", "b"])
        self.assertEqual(counted.frame["files_omitted"], ["c", "d", "e"])
        del by_count

    def test_an_outputs_folder_swapped_for_a_symlink_gives_nothing(self):
        finished = run_script(self, dedent("""
            import os, shutil
            OUT = os.environ["PYEXEC_OUTPUTS_DIR"]
            def main():
                shutil.rmtree(OUT)
                os.makedirs("/tmp/pyexec-elsewhere-" + str(os.getpid()), exist_ok=True)
                os.symlink("/etc", OUT)
                return {}
        """))
        self.assertEqual(finished.frame, {"type": "result", "result": {}})

    def test_media_types_come_from_pythons_own_table(self):
        for name, expected in [("a.csv", "text/csv"), ("b/c.JSON", "application/json"),
                               ("x.png", "image/png"), ("noext", "application/octet-stream"),
                               (".hidden", "application/octet-stream"),
                               ("d.unknownext", "application/octet-stream")]:
            self.assertEqual(outputs.media_type(name), expected, name)

    def test_content_types_come_from_the_leading_bytes(self):
        for data, name, expected in [
                (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "plot.bin", "image/png"),
                (b"\xff\xd8\xff\xe0\0\x10JFIF", "photo", "image/jpeg"),
                (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3", "doc.txt", "application/pdf"),
                (b'<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg xmlns="x"></svg>', "f",
                 "image/svg+xml"),
                (b"<svg></svg>", "f.txt", "image/svg+xml"),
                (b'{"a": [1, 2]}', "data.txt", "application/json"),
                (b"[1, 2", "broken.json", "text/plain"),
                (b"a,b\n1,2\n3,4\n", "table", "text/csv"),
                (b"just one line", "x.csv", "text/csv"),
                ("Zürich\n".encode(), "notes", "text/plain"),
                (b"\0\1\2", "x.csv", "application/octet-stream"),
                (b"", "empty.txt", "application/octet-stream"),
                (b"a" * 4095 + "é".encode(), "cut", "text/plain")]:
            self.assertEqual(outputs.content_type(data, name), expected, name)


class FiguresTest(unittest.TestCase):
    """Figures a script leaves open come back as PNG files (pyexec_runner/figures.py)."""

    def test_open_figures_are_saved_in_order_around_the_scripts_own_names(self):
        finished = run_script(self, dedent("""
            import os
            import matplotlib.pyplot as plt
            OUT = os.environ["PYEXEC_OUTPUTS_DIR"]
            def main():
                with open(os.path.join(OUT, "figure-1.png"), "wb") as f:
                    f.write(b"mine")
                plt.plot([1, 2, 3])
                plt.figure()
                plt.bar(["a", "b"], [3, 4])
                plt.show()
                return {}
        """))
        files = files_of(self, finished)
        self.assertEqual(sorted(files), ["figure-1.png", "figure-2.png", "figure-3.png"])
        self.assertEqual(files["figure-1.png"][0], b"mine")
        for name in ("figure-2.png", "figure-3.png"):
            self.assertTrue(files[name][0].startswith(b"\x89PNG\r\n\x1a\n"), name)
        types = {e["name"]: e["content_type"] for e in finished.frame["files"]}
        self.assertEqual(types, {"figure-1.png": "text/plain", "figure-2.png": "image/png",
                                 "figure-3.png": "image/png"})
        self.assertEqual((finished.stdout, finished.stderr), (b"", b""))

    def test_a_figure_that_fails_to_save_is_reported_and_the_job_succeeds(self):
        finished = run_script(self, dedent("""
            import matplotlib.pyplot as plt
            def main():
                plt.figure(dpi=2_000_000).gca().plot([1, 2])
                plt.figure().gca().plot([2, 1])
                return {"ok": True}
        """))
        self.assertEqual(finished.frame["result"], {"ok": True})
        self.assertEqual(list(files_of(self, finished)), ["figure-2.png"])
        self.assertIn(b"pyexec: figure-1.png could not be saved: ValueError", finished.stderr)

    def test_figures_count_against_the_file_caps(self):
        finished = run_script(self, dedent("""
            import matplotlib.pyplot as plt
            def main():
                for _ in range(3):
                    plt.figure()
                return {}
        """), max_files=2)
        self.assertEqual(list(files_of(self, finished)), ["figure-1.png", "figure-2.png"])
        self.assertEqual(finished.frame["files_omitted"], ["figure-3.png"])
