"""The training engine's promises that need more than one process: a run killed with SIGKILL mid-epoch and
resumed ends bit-identical to an uninterrupted one; under two DDP processes, `evaluate` counts every image once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cxr_nb.datasets import synth_dataset
from cxr_nb.models import build_model
from cxr_nb.synth import write_dataset
from cxr_nb.train import read_checkpoint

CHILD = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from cxr_nb.datasets import synth_dataset
    from cxr_nb.models import build_model
    from cxr_nb.train import FitConfig, fit
    root, cache, out, slow = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    torch.manual_seed(0)
    model = build_model("tiny-xrv-densenet", weights="none", labels=["Cardiomegaly", "Effusion"])
    data = synth_dataset(root).cached(model.spec.input, root=cache, progress=False)
    val = data.csv.patientid.astype(int).to_numpy() % 4 == 0
    config = FitConfig(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, checkpoint_every=2, weighted_sampler=True)
    fit(model, data.subset(~val), data.subset(val), out, config, resume=True, progress=False,
        on_step=lambda p: time.sleep(slow))
""")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    root = write_dataset("nih", d/"nih", n=200, seed=11, size=80, progress=False)
    spec = build_model("tiny-xrv-densenet", weights="none").spec
    synth_dataset(root).cached(spec.input, root=d/"cache", progress=False)      # built once, before any child reads it
    (d/"child.py").write_text(CHILD)
    return d, root


def _child(d: Path, root: Path, out: str, slow: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, str(d/"child.py"), str(root), str(d/"cache"), str(d/out), str(slow)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _step(d: Path, out: str) -> int:
    try: return json.loads((d/out/"checkpoints"/"last.json").read_text())["progress"]["global_step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError): return -1


def test_a_run_killed_mid_epoch_resumes_bit_identical(synth):
    d, root = synth
    reference = _child(d, root, "reference")
    assert reference.wait(timeout=300) == 0, reference.stdout.read()
    killed = _child(d, root, "killed", slow=0.05)
    steps_per_epoch = json.loads((d/"reference"/"log.json").read_text())[0]["step"]
    deadline = time.time() + 300
    while _step(d, "killed") < steps_per_epoch + 3 and time.time() < deadline and killed.poll() is None:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    at = json.loads((d/"killed"/"checkpoints"/"last.json").read_text())["progress"]
    assert at["epoch"] == 1 and 0 < at["step_in_epoch"] < steps_per_epoch, at          # mid-epoch 2
    resumed = _child(d, root, "killed")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    a, rec_a = read_checkpoint(d/"reference"/"checkpoints"/"last.safetensors")
    b, rec_b = read_checkpoint(d/"killed"/"checkpoints"/"last.safetensors")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k]) and not k.startswith("rng.")]
    assert not differ, f"resumed run differs in {differ[:5]}"
    timing = ("seconds", "images_per_s", "eval_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]
    assert strip(rec_a["progress"]["history"]) == strip(rec_b["progress"]["history"])
    best_a, best_b = (read_checkpoint(d/run/"checkpoints"/"best.safetensors")[0] for run in ("reference", "killed"))
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def _ddp_evaluate(root: str, cache: str, out: str):
    from accelerate import Accelerator
    from cxr_nb.train import FitConfig, evaluate, fit
    torch.manual_seed(0)
    model = build_model("tiny-xrv-densenet", weights="none", labels=["Cardiomegaly"])
    data = synth_dataset(root).cached(model.spec.input, root=cache, progress=False)
    val = data.subset(list(range(45)))                          # odd: the distributed sampler pads the last batch
    fit(model, data.subset(list(range(45, len(data)))), val, out, FitConfig(epochs=1, batch_size=8), progress=False)
    acc = Accelerator(cpu=True)
    loader = acc.prepare(torch.utils.data.DataLoader(val, batch_size=8))
    preds = evaluate(model, loader, accelerator=acc)
    if acc.is_main_process:
        Path(out, "ids.json").write_text(json.dumps({"ids": preds.ids.tolist(), "processes": acc.num_processes}))


def test_evaluate_under_two_processes_counts_every_image_once(synth, tmp_path):
    from accelerate import debug_launcher
    d, root = synth
    debug_launcher(_ddp_evaluate, args=(str(root), str(d/"cache"), str(tmp_path/"ddp")), num_processes=2)
    got = json.loads((tmp_path/"ddp"/"ids.json").read_text())
    assert got["processes"] == 2
    assert sorted(got["ids"]) == list(range(45))
    assert (tmp_path/"ddp"/"checkpoints"/"best.safetensors").is_file()
