"""The in-domain pretraining study end to end through the CLI on its smoke parameters: every arm and contrast present
(the ImageNet ones absent, with the reason, where no ImageNet weights are cached), paired differences with CIs that hold
their point, the backbones saved under the contract and readable by the studies that reuse them; a missing pretraining
folder stops the run naming it; both params files pass the runner's check."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxr_nb.pretrain import find_backbones, load_backbone
from cxr_nb.runner import check_parameters, load_spec

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cxr-nb")
NOTEBOOK = ROOT/"nbs/studies/05_pretraining.ipynb"


def run_study(params: dict, path: Path, outputs: Path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump({"notebook": str(NOTEBOOK), "run": path.stem, "parameters": params}))
    env = {**os.environ, "CXR_OUTPUTS": str(outputs), "CXR_DATA_ROOT": str(outputs.parent/"data")}
    return subprocess.run([str(CLI), "run", "--quiet", str(path)], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    d = tmp_path_factory.mktemp("study05")   # not "...train...": torchxrayvision reads any CheXpert path holding "train" as train.csv
    r = run_study({"cpu_threads": 1}, d/"smoke.yaml", d/"outputs")
    assert r.returncode == 0, r.stderr[-3000:]
    folder = d/"outputs"/"pretraining"/"smoke"
    return folder, json.loads((folder/"metrics.json").read_text())


def test_every_arm_and_contrast_is_reported(smoke):
    folder, metrics = smoke
    arms = metrics["arms"]
    assert len(arms) == 11 and {a for a, r in arms.items() if r["absent"]} == {"DenseNet ImageNet", "ResNet ImageNet"}   # tiny models: no ImageNet
    assert all("ImageNet" in r["absent"] or "cached" in r["absent"] for r in arms.values() if r["absent"])
    assert {arms[a]["weights_source"] for a in ("DenseNet pretext", "DenseNet Barlow Twins", "ResNet pretext")} == {"in-domain"}
    assert arms["DenseNet random"]["weights_source"] == "none"
    contrasts = metrics["contrasts"]
    assert len(contrasts) == 10 and len(metrics["sentences"]) == 10
    measured = {n: c for n, c in contrasts.items() if not c["absent"]}
    assert len(measured) == 8 and all(c["lo"] <= c["diff"] <= c["hi"] for c in measured.values())
    assert all(("excludes 0" in s) or ("includes 0" in s) or ("not measured" in s) for s in metrics["sentences"])
    for name, t in metrics["test"].items(): assert t["n"] > 0 and (t["lo"] is None or t["lo"] <= t["mean_auroc"] <= t["hi"]), name
    assert {h["name"] for h in metrics["headline"]} >= {"mean AUROC, DenseNet random init", "pretext - random (DenseNet)"}
    assert {"pretraining_curves", "finetuning_curves", "test_auroc", "contrasts"} <= set(metrics["figures"])


def test_the_backbones_follow_the_contract(smoke):
    folder, metrics = smoke
    found = find_backbones(folder)
    assert sorted(zip(found.model, found.method)) == [("tiny-resnet", "pretext"), ("tiny-xrv-densenet", "barlow_twins"),
                                                      ("tiny-xrv-densenet", "pretext")]
    for row in found.itertuples():
        card = json.loads((Path(row.folder)/"card.json").read_text())
        assert card["weights_source"] == "in-domain" and card["run"] == str(folder) and card["resolution"] == 32
        model = load_backbone(row.folder, ["Edema", "Pneumonia"])
        assert model.pathologies == ["Edema", "Pneumonia"] and model.input.size == (32, 32) and model.weights.source == "in-domain"


def test_a_missing_pretraining_folder_stops_the_run_naming_it(tmp_path):
    r = run_study({"nih_root": str(tmp_path/"NIH")}, tmp_path/"missing.yaml", tmp_path/"outputs")
    assert r.returncode == 1
    manifest = json.loads((tmp_path/"outputs"/"pretraining"/"missing"/"run.json").read_text())
    assert manifest["status"] == "failed" and "NIH folder not found" in manifest["error"] and str(tmp_path/"NIH") in manifest["error"]


@pytest.mark.parametrize("name", ["demo", "full"])
def test_params_files_pass_the_runners_check(name):
    spec = load_spec(ROOT/"params"/"pretraining"/f"{name}.yaml")
    assert set(spec.parameters) <= set(check_parameters(spec))
    if name == "full": assert spec.parameters["imagenet_weights"] == "published" and spec.parameters["barlow_epochs"] == 50
