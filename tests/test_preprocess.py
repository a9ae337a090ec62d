"""What the preprocess and bench notebooks test badly: the benchmark command as a real process, and
cache builds killed or interrupted from outside."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest

from cxr_nb.preprocess import ImageCache, cxr_phantom

N_IMAGES = 40

BUILD_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from cxr_nb.preprocess import Preprocess, build_cache, read_gray_uint8

    delay, started = float(os.environ.get("DELAY", "0")), []
    def loader(path):
        if not started:
            started.append(1); print("STARTED", flush=True)
        time.sleep(delay)
        return read_gray_uint8(path)

    root, src = sys.argv[1:]
    c = build_cache(sorted(Path(src).glob("*.png")), Preprocess(size=32), root=root, loader=loader,
                    workers=2, chunk=4, progress=False)
    print("BUILT" if c.built else "REUSED", c.path, len(c), flush=True)
""")


@pytest.fixture
def images(tmp_path):
    src = tmp_path/"src"; src.mkdir()
    for i in range(N_IMAGES):
        cv2.imwrite(str(src/f"{i:03d}.png"), cxr_phantom(96, 80, frame=(i % 12, 0, 0, i % 7), seed=i))
    return src


def ctrl_c_as_usual():
    "In the child: Ctrl-C's default disposition, which Python turns into KeyboardInterrupt. A job started with `&` in a shell without job control inherits SIGINT ignored, and would carry on."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_build(tmp_path, src, delay):
    "Start the build script as its own process; returns it once it has read its first image."
    script = tmp_path/"build.py"; script.write_text(BUILD_SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path/"cache"), str(src)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "DELAY": str(delay)}, preexec_fn=ctrl_c_as_usual)
    line = p.stdout.readline()
    if line.strip() != "STARTED":
        p.kill(); raise AssertionError(f"build did not start: {line!r} {p.stderr.read()}")
    time.sleep(0.5)                    # well inside the build (40 images x delay / 2 threads)
    return p


def run_build(tmp_path, src):
    script = tmp_path/"build.py"; script.write_text(BUILD_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path/"cache"), str(src)], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "DELAY": "0"})
    assert r.returncode == 0, r.stderr
    return r.stdout.split()[-3:]       # BUILT|REUSED, path, n


def test_killed_build_leaves_no_cache_and_next_build_cleans_up(tmp_path, images):
    p = start_build(tmp_path, images, delay=0.2)
    p.kill(); p.wait(timeout=60)       # SIGKILL: no cleanup code runs
    entries = list((tmp_path/"cache").iterdir())
    assert [e for e in entries if not e.name.startswith(".")] == [], "a killed build left a finished-looking cache"
    assert len(entries) == 1 and ".partial-" in entries[0].name and not (entries[0]/"manifest.json").exists()

    status, path, n = run_build(tmp_path, images)
    assert (status, int(n)) == ("BUILT", N_IMAGES)
    assert [e.name for e in (tmp_path/"cache").iterdir()] == [Path(path).name], "stale temporary folder not removed"
    assert len(ImageCache(path)) == N_IMAGES
    assert run_build(tmp_path, images)[:2] == ["REUSED", path]      # another process reuses it


def test_ctrl_c_build_removes_its_temporary_folder(tmp_path, images):
    p = start_build(tmp_path, images, delay=0.2)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0 and "KeyboardInterrupt" in err
    assert time.perf_counter() - t0 < 5, "the interrupted build did not stop promptly"
    assert list((tmp_path/"cache").iterdir()) == []


CTRL_C_IN_A_FINALIZER = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    from cxr_nb.core import atomic_dir

    class CtrlCWhileCollected:
        def __del__(self): signal.raise_signal(signal.SIGINT)   # Python drops the KeyboardInterrupt raised in here

    with atomic_dir(Path(sys.argv[1])/"cache") as stage:
        CtrlCWhileCollected()
        (stage/"rest.npy").write_bytes(b"written after the Ctrl-C")
    print("COMMITTED", flush=True)
""")


def test_ctrl_c_dropped_by_a_finalizer_still_stops_the_commit(tmp_path):
    "A Ctrl-C whose KeyboardInterrupt lands in a __del__, where Python swallows it, made certain: the folder is still not committed."
    script = tmp_path/"finalizer.py"; script.write_text(CTRL_C_IN_A_FINALIZER)
    out = tmp_path/"out"; out.mkdir()
    r = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120, preexec_fn=ctrl_c_as_usual)
    assert r.returncode != 0 and "COMMITTED" not in r.stdout and "KeyboardInterrupt" in r.stderr, (r.stdout, r.stderr)
    assert "Exception ignored" not in r.stderr, r.stderr          # remembered, so not reported as lost
    assert list(out.iterdir()) == []


def test_bench_cache_command_prints_ratio():
    r = subprocess.run([sys.executable, "-m", "cxr_nb.bench", "cache", "--n", "100", "--repeats", "3"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "cache (memmap row)" in r.stdout and "png files (cv2.imread)" in r.stdout
    ratio = float(re.search(r"^ratio png/cache: ([\d.]+)$", r.stdout, re.M).group(1))
    assert ratio > 3, r.stdout        # ~100x on an idle machine; a loose bound for busy CI runners


def test_bench_command_rejects_unknown_benchmark():
    r = subprocess.run([sys.executable, "-m", "cxr_nb.bench", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr


def test_bench_dataset_command_prints_both_ratios():
    r = subprocess.run([sys.executable, "-m", "cxr_nb.bench", "dataset", "--n", "16", "--src-size", "128", "--size", "32",
                        "--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for kind in ("images only", "with masks"):
        ratio = float(re.search(rf"^ratio adapter/cache, {kind}: ([\d.]+)$", r.stdout, re.M).group(1))
        assert ratio > 1, r.stdout
