"""`fit` and `evaluate` under two DDP processes (torchrun, CPU, gloo) against one process: the gathered validation
predictions cover the set exactly once (the distributed sampler's padding removed), match a one-process evaluation of the
same weights image by image, and so give the same loss and AUROC; only rank 0 writes the run folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_nb.datasets import synth_dataset
from cxr_nb.models import build_model
from cxr_nb.synth import write_dataset

N_VAL = 45      # odd: with 2 ranks the distributed sampler pads the last batch with a repeated image
TOL = 1e-5      # absolute, on every score, the loss and the AUROCs: the same weights, batches split differently

CHILD = textwrap.dedent("""
    import json, os, sys, torch
    from pathlib import Path
    root, cache, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    writes, watching = [], [True]
    def audit(event, args):                     # every file this process opens for writing (or renames) under `out`
        if not watching[0] or event not in ("open", "os.rename"): return
        path = args[1] if event == "os.rename" else args[0]
        if event == "open":
            how, flags = args[1], args[2]
            if not (any(c in how for c in "wax+") if how else flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)): return
        if isinstance(path, (str, bytes, os.PathLike)) and str(Path(os.fsdecode(path)).resolve()).startswith(str(out.resolve())):
            writes.append(os.fsdecode(path))
    sys.addaudithook(audit)
    from accelerate import Accelerator
    from cxr_nb.datasets import synth_dataset
    from cxr_nb.models import build_model
    from cxr_nb.train import FitConfig, evaluate, fit, load_trained
    torch.manual_seed(0)
    model = build_model("tiny-xrv-densenet", weights="none", labels=["Cardiomegaly", "Effusion"])
    data = synth_dataset(root).cached(model.spec.input, root=cache, progress=False)
    val = data.subset(list(range(%d)))
    if mode == "fit":
        fit(model, data.subset(list(range(%d, len(data)))), val, out, FitConfig(epochs=1, batch_size=8, cpu=True), progress=False)
    trained = load_trained(out/"checkpoints"/"best.safetensors")
    acc = Accelerator(cpu=True)
    preds = evaluate(trained, acc.prepare(torch.utils.data.DataLoader(val, batch_size=8)), accelerator=acc)
    watching[0] = False
    Path(out.parent, f"writes-{mode}-{rank}.json").write_text(json.dumps(writes))
    if acc.is_main_process:
        Path(out.parent, f"eval-{world}.json").write_text(json.dumps(
            {"processes": acc.num_processes, "ids": preds.ids.tolist(), "scores": preds.scores.tolist(),
             "labels": preds.labels.tolist(), "metrics": preds.metrics()}))
    acc.wait_for_everyone()
    if world > 1: torch.distributed.destroy_process_group()   # gloo shut down before exit (its threads torn down at exit abort)
""" % (N_VAL, N_VAL))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Train once under two processes (and evaluate there), then evaluate the same best checkpoint in one process."
    d = tmp_path_factory.mktemp("ddp")
    root = write_dataset("nih", d/"nih", n=120, seed=11, size=80, progress=False)
    spec = build_model("tiny-xrv-densenet", weights="none").spec
    synth_dataset(root).cached(spec.input, root=d/"cache", progress=False)      # built once, before any child reads it
    (d/"child.py").write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    args = [str(d/"child.py"), str(root), str(d/"cache"), str(d/"run")]
    for cmd in ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args, "fit"],
                [sys.executable, *args, "eval"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d


def _eval(d: Path, processes: int) -> dict:
    got = json.loads((d/f"eval-{processes}.json").read_text())
    assert got["processes"] == processes
    return got


def test_gathered_predictions_cover_the_validation_set_exactly_once(runs):
    for processes in (1, 2):
        ids = _eval(runs, processes)["ids"]
        assert len(ids) == N_VAL and sorted(ids) == list(range(N_VAL)), (processes, ids)


def test_two_processes_match_one_process_per_image_and_in_the_metrics(runs):
    one, two = _eval(runs, 1), _eval(runs, 2)
    order = lambda e: np.argsort(e["ids"])
    s1, s2 = (np.asarray(e["scores"])[order(e)] for e in (one, two))
    np.testing.assert_allclose(s2, s1, rtol=0, atol=TOL)
    np.testing.assert_array_equal(*(np.asarray(e["labels"])[order(e)] for e in (one, two)))
    assert one["metrics"].keys() == two["metrics"].keys() and np.isfinite(one["metrics"]["mean_auroc"])
    for k, v in one["metrics"].items():
        assert two["metrics"][k] == pytest.approx(v, rel=0, abs=TOL, nan_ok=True), k


def test_the_metrics_fit_logged_under_two_processes_are_those_of_one_process(runs):
    "fit's own validation, gathered from both ranks, equals a one-process evaluation of the checkpoint it kept."
    logged = pd.read_csv(runs/"run"/"log.csv")
    assert len(logged) == 1                                         # epochs=1: one row, written once
    for k, v in _eval(runs, 1)["metrics"].items():
        assert logged[k].iloc[0] == pytest.approx(v, rel=0, abs=TOL, nan_ok=True), k


def test_only_rank_0_writes_the_run_folder(runs):
    run = runs/"run"
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files == ["checkpoints/best.json", "checkpoints/best.safetensors", "checkpoints/last.json",
                     "checkpoints/last.safetensors", "curves.png", "log.csv", "log.json"], files   # no partial or duplicate files
    assert json.loads((runs/"writes-fit-1.json").read_text()) == []
    assert any(p.endswith("log.csv") for p in json.loads((runs/"writes-fit-0.json").read_text()))   # the audit hook sees writes
