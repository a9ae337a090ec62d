"""The interrupt memory of `cxr_nb.core` in a real main thread (nbdev-test runs a notebook's cells in a worker thread,
where Python sets no signal handlers, so the core lessons on signals are exercised here, in child processes)."""
import subprocess
import sys

SIGTERM_IN_A_FINALIZER = """
import signal, sys, time
from pathlib import Path
from cxr_nb.core import SignalInterrupt, atomic_dir, sigterm_as_interrupt

class SignalledWhileCollected:
    def __del__(self): signal.raise_signal(signal.SIGTERM)      # Python drops the SignalInterrupt raised in here

class FailsWhileCollected:
    def __del__(self): raise RuntimeError("a finalizer's own error")

steps = 0
try:
    with sigterm_as_interrupt():
        with atomic_dir(Path(sys.argv[1])/"dataset") as stage:
            (stage/"half.txt").write_text("written before the signal")
            FailsWhileCollected()
            SignalledWhileCollected()
            while steps < 10**6: steps += 1; time.sleep(1e-5)   # about 10 s, if nothing stopped it
    print("COMMITTED", flush=True)
except SignalInterrupt as e:
    print("INTERRUPTED", e.signum, "after", steps, "steps", flush=True)
"""

BLOCKING_WAIT = """
import select, signal, socket, time
from cxr_nb.core import SignalInterrupt, sigterm_as_interrupt

class SignalledWhileCollected:
    def __del__(self): signal.raise_signal(signal.SIGTERM)

quiet, start = socket.socketpair(), time.monotonic()
try:
    with sigterm_as_interrupt():
        SignalledWhileCollected()
        select.select([quiet[0]], [], [], 20)                   # a wait like cxr-nb run's on papermill's kernel
    print("WAITED", round(time.monotonic() - start, 2), flush=True)
except SignalInterrupt:
    print("INTERRUPTED after", round(time.monotonic() - start, 2), "s", flush=True)
"""


def run_child(tmp_path, source, *args):
    script = tmp_path/"child.py"; script.write_text(source)
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_sigterm_dropped_by_a_finalizer_is_sent_again_and_commits_nothing(tmp_path):
    out = tmp_path/"out"; out.mkdir()
    r = run_child(tmp_path, SIGTERM_IN_A_FINALIZER, out)
    assert r.returncode == 0 and "COMMITTED" not in r.stdout, (r.stdout, r.stderr)
    words = r.stdout.split()
    assert words[:2] == ["INTERRUPTED", "15"], r.stdout
    assert int(words[3]) < 10**4, r.stdout                         # sent again within moments, not at the block's end
    assert list(out.iterdir()) == []                                # neither the folder nor its staging copy
    assert "a finalizer's own error" in r.stderr                    # what else a finalizer drops is still reported...
    assert "SignalInterrupt" not in r.stderr, r.stderr              # ...the interrupt, which is not lost, is not


def test_sigterm_dropped_by_a_finalizer_ends_a_blocking_wait(tmp_path):
    r = run_child(tmp_path, BLOCKING_WAIT)
    assert r.stdout.startswith("INTERRUPTED after"), (r.stdout, r.stderr)
    assert float(r.stdout.split()[2]) < 5, r.stdout                 # about 0.01 s here; 20 s before it was sent again
