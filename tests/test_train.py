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
from cxr_nb.models import build_model, set_trainable
from cxr_nb.synth import write_dataset
from cxr_nb.train import read_checkpoint

CHILD = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from cxr_nb.datasets import synth_dataset
    from cxr_nb.models import build_model, set_trainable
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


DDP_CHILD = textwrap.dedent("""
    import json, sys, torch
    from pathlib import Path
    from accelerate import Accelerator
    from cxr_nb.datasets import synth_dataset
    from cxr_nb.models import build_model
    from cxr_nb.train import FitConfig, evaluate, fit
    root, cache, out = sys.argv[1:4]
    torch.manual_seed(0)
    model = build_model("tiny-xrv-densenet", weights="none", labels=["Cardiomegaly"])
    data = synth_dataset(root).cached(model.spec.input, root=cache, progress=False)
    val = data.subset(list(range(45)))                          # odd: the distributed sampler pads the last batch
    fit(model, data.subset(list(range(45, len(data)))), val, out, FitConfig(epochs=1, batch_size=8, cpu=True), progress=False)
    acc = Accelerator(cpu=True)
    loader = acc.prepare(torch.utils.data.DataLoader(val, batch_size=8))
    preds = evaluate(model, loader, accelerator=acc)
    if acc.is_main_process:
        Path(out, "ids.json").write_text(json.dumps({"ids": preds.ids.tolist(), "processes": acc.num_processes}))
    acc.wait_for_everyone()
    torch.distributed.destroy_process_group()   # gloo shut down before exit: its threads torn down at exit once aborted rank 0
""")


def test_evaluate_under_two_processes_counts_every_image_once(synth, tmp_path):
    "Two fresh CPU processes (torchrun, as a user would launch them; a fork of this test process could deadlock)."
    d, root = synth
    (tmp_path/"ddp_child.py").write_text(DDP_CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(tmp_path/"ddp_child.py"), str(root), str(d/"cache"), str(tmp_path/"ddp")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = json.loads((tmp_path/"ddp"/"ids.json").read_text())
    assert got["processes"] == 2
    assert sorted(got["ids"]) == list(range(45))
    assert (tmp_path/"ddp"/"checkpoints"/"best.safetensors").is_file()


def _split(root, cache):
    torch.manual_seed(0)
    model = build_model("tiny-xrv-densenet", weights="none", labels=["Cardiomegaly"])
    data = synth_dataset(root).cached(model.spec.input, root=cache, progress=False)
    val = data.csv.patientid.astype(int).to_numpy() % 4 == 0
    return model, data.subset(~val), data.subset(val)


HISTORY = ["epoch", "step", "train_loss", "val_loss", "mean_auroc"]   # the log columns a resumed run must reproduce


def _whole_and_cut(synth, tmp_path, config, steps_into_epoch_2: int):
    "An uninterrupted run, and the same run cut by a KeyboardInterrupt a few steps into epoch 2 (folder `tmp_path/'cut'`); then fresh inputs."
    from cxr_nb.train import fit
    d, root = synth
    model, train, val = _split(root, d/"cache")
    whole = fit(model, train, val, tmp_path/"whole", config, progress=False)

    def stop(p):
        if p["global_step"] == len(train) // config.batch_size + steps_into_epoch_2: raise KeyboardInterrupt
    model, train, val = _split(root, d/"cache")
    with pytest.raises(KeyboardInterrupt):
        fit(model, train, val, tmp_path/"cut", config, progress=False, on_step=stop)
    return whole, _split(root, d/"cache")


@pytest.mark.parametrize("schedule, optimizer", [("plateau", "sgd"), ("onecycle", "adamw"), ("constant", "sgd")])
def test_every_schedule_resumes_to_the_same_run(synth, tmp_path, schedule, optimizer):
    "Each schedule's state survives the JSON of a checkpoint (ReduceLROnPlateau keeps infinities) and resumes exactly."
    from cxr_nb.train import FitConfig, fit
    config = FitConfig(epochs=2, batch_size=16, lr=1e-2, schedule=schedule, optimizer=optimizer, checkpoint_every=4)
    whole, (model, train, val) = _whole_and_cut(synth, tmp_path, config, 5)
    resumed = fit(model, train, val, tmp_path/"cut", config, resume=True, progress=False)
    cols = HISTORY + [c for c in whole.history if c.startswith("lr:")]
    assert whole.history[cols].equals(resumed.history[cols])


def test_early_stopping_stops_after_patience_and_keeps_the_best(synth, tmp_path):
    from cxr_nb.train import FitConfig, fit, load_trained
    d, root = synth
    model, train, val = _split(root, d/"cache")
    set_trainable(model, "head", freeze_bn=True)       # BatchNorm statistics frozen too: nothing can change the ranking
    result = fit(model, train, val, tmp_path/"es", FitConfig(epochs=5, batch_size=16, lr=1e-12, patience=2), progress=False)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1     # nothing improves after epoch 1
    _, record = read_checkpoint(result.best_checkpoint)
    assert record["progress"]["best_epoch"] == 1 and "optim.state" not in " ".join(read_checkpoint(result.best_checkpoint)[0])
    assert load_trained(result.best_checkpoint).weights.source == "checkpoint"
    again = fit(model, train, val, tmp_path/"es", FitConfig(epochs=5, batch_size=16, lr=1e-12, patience=2), resume=True,
                progress=False)
    assert again.stopped_early and len(again.history) == 3                                    # finished: nothing re-run


def _as_before_gpu_fields(checkpoint: Path):
    "Rewrite a checkpoint as cxr-nb wrote it before FitConfig had `channels_last` and `compile`."
    from safetensors.torch import save
    tensors, record = read_checkpoint(checkpoint)
    for field in ("channels_last", "compile"): del record["config"][field]
    checkpoint.write_bytes(save(tensors, metadata={"cxr_nb": json.dumps(record)}))


def test_an_old_checkpoint_resumes_with_the_gpu_fields_at_their_defaults(synth, tmp_path):
    "A run saved before channels_last / compile existed resumes (num_workers may change, to -1 too); turning channels_last on is refused."
    from dataclasses import replace
    from cxr_nb.train import FitConfig, fit
    config = FitConfig(epochs=2, batch_size=16, lr=3e-3, checkpoint_every=3)
    whole, (model, train, val) = _whole_and_cut(synth, tmp_path, config, 4)
    _as_before_gpu_fields(tmp_path/"cut"/"checkpoints"/"last.safetensors")
    with pytest.raises(ValueError, match="channels_last"):
        fit(model, train, val, tmp_path/"cut", replace(config, channels_last=True), resume=True)
    resumed = fit(model, train, val, tmp_path/"cut", replace(config, num_workers=-1), resume=True, progress=False)
    assert whole.history[HISTORY].equals(resumed.history[HISTORY])


def test_a_channels_last_run_resumes_to_the_same_run(synth, tmp_path):
    "The checkpoint stores contiguous tensors; a channels_last run cut mid-epoch and resumed ends with the same weights."
    from cxr_nb.train import FitConfig, fit
    config = FitConfig(epochs=2, batch_size=16, lr=3e-3, checkpoint_every=3, channels_last=True)
    whole, (model, train, val) = _whole_and_cut(synth, tmp_path, config, 4)
    resumed = fit(model, train, val, tmp_path/"cut", config, resume=True, progress=False)
    assert whole.history[HISTORY].equals(resumed.history[HISTORY])
    a, b = (read_checkpoint(r.last_checkpoint)[0] for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
