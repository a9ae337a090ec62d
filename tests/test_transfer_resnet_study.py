"""Bad-input catalogue of what the ResNet transfer-learning study added to the library (AUROC and AUPRC with CIs, the
confusion matrix and classification report, ONNX logits read back with onnxruntime): each case is refused naming the value,
shape or file (see `badinput.py`). Then the study itself, end to end through the CLI on the paths `nbdev-test` does not
take: the weighted sampler and an in-domain backbone saved as the pretraining study saves them; and its refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from badinput import refused
from cxr_nb.metrics import confusion_report, ranking_metrics
from cxr_nb.models import build_model, example_batch, export_onnx, onnx_logits
from cxr_nb.train import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cxr-nb")
y = np.array([1, 0, 1, 0, 1, 1.])
p = np.array([0.9, 0.2, 0.7, 0.4, 0.6, 0.8])

CASES = {
    "ranking metrics of one class": (lambda d: ranking_metrics(np.ones(4), p[:4]), ValueError, ["both classes: 4 positive, 0 negative"]),
    "ranking metrics of two findings": (lambda d: ranking_metrics(np.c_[y, y], np.c_[p, p]), ValueError, ["one finding; got 2"]),
    "ranking metrics with labels for other films": (lambda d: ranking_metrics(y[:4], p), ValueError, ["(4,)", "(6,)"]),
    "ranking metrics with a label of 2": (lambda d: ranking_metrics(np.r_[y[:5], 2], p), ValueError, ["row 5", "is 2"]),
    "ranking metrics with a patient id missing": (
        lambda d: ranking_metrics(y, p, ["a", "b", None, "c", "d", "e"]), ValueError, ["patient ids are missing", "rows [2]"]),
    "a confusion report of logits": (lambda d: confusion_report(y, p*4 - 2), ValueError, ["look like logits"]),
    "a confusion report at a threshold of 1.5": (lambda d: confusion_report(y, p, 1.5), ValueError, ["threshold must be in (0, 1)", "1.5"]),
    "a confusion report with one class name": (lambda d: confusion_report(y, p, classes=["PNEUMONIA"]), ValueError, ["two distinct names"]),
    "a confusion report with one name twice": (lambda d: confusion_report(y, p, classes=["a", "a"]), ValueError, ["['a', 'a']"]),
    "a confusion report of two findings": (lambda d: confusion_report(np.c_[y, y], np.c_[p, p]), ValueError, ["one finding; got 2"]),
    "ONNX logits of a missing file": (lambda d: onnx_logits(d/"nowhere.onnx", torch.zeros(1, 3, 8, 8)), FileNotFoundError,
                                      ["nowhere.onnx", "export_onnx"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused(case, tmp_path):
    call, exc, named = CASES[case]
    refused(lambda: call(tmp_path), exc, *named)


def test_onnx_logits_refuses_images_it_cannot_take(tmp_path):
    model = build_model("tiny-resnet", weights="none", labels=["Pneumonia"]).eval()
    path = export_onnx(model, tmp_path/"tiny.onnx")["path"]
    x = example_batch(model, 3)
    refused(lambda: onnx_logits(path, x[:, :1]), ValueError, "takes N x 3 x H x W images", "(3, 1, 64, 64)")
    refused(lambda: onnx_logits(path, x[0]), ValueError, "(3, 64, 64)")
    refused(lambda: onnx_logits(path, x, batch_size=0), ValueError, "batch_size", "0")
    with torch.no_grad(): assert np.abs(onnx_logits(path, x, batch_size=2) - model(x).numpy()).max() < 1e-4   # what it accepts


def run_study(params: dict, path: Path, outputs: Path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump({"notebook": str(ROOT/"nbs/studies/07_transfer_resnet.ipynb"), "run": path.stem, "parameters": params}))
    env = {**os.environ, "CXR_OUTPUTS": str(outputs), "CXR_DATA_ROOT": str(outputs.parent/"data")}
    return subprocess.run([str(CLI), "run", "--quiet", str(path)], capture_output=True, text=True, env=env, timeout=900)


def save_backbone(folder: Path, model_name: str = "tiny-resnet") -> Path:
    "A backbone as 05_pretraining saves one: weights.safetensors (save_checkpoint) and card.json, its head the pretext's."
    model = build_model(model_name, weights="none", labels=["Cardiomegaly", "Effusion"])
    folder.mkdir(parents=True)
    save_checkpoint(folder/"weights.safetensors", model, {"progress": {}, "config": {}})
    (folder/"card.json").write_text(json.dumps({"model": model_name, "method": "pretext", "images": 10, "resolution": 64, "epochs": 1,
                                                "weights_source": "in-domain", "data": "SynthCXR nih layout", "run": str(folder.parent)}))
    return folder


def test_the_sampler_and_an_in_domain_backbone_end_to_end(tmp_path):
    "Smoke size with the weighted sampler and a saved in-domain backbone (under the outputs root): both arms train and are compared."
    outputs = tmp_path/"outputs"
    save_backbone(outputs/"pretraining"/"demo"/"backbones"/"tiny-resnet-pretext")
    r = run_study({"imbalance": "sampler", "in_domain_backbone": "pretraining/demo/backbones/tiny-resnet-pretext", "cpu_threads": 1},
                  tmp_path/"smoke.yaml", outputs)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((outputs/"transfer_resnet"/"smoke"/"metrics.json").read_text())
    assert metrics["arms"] == {"main": "none", "in-domain": "in-domain"}
    gap = metrics["pneumonia_test"]["in_domain_minus_main_auroc"]
    assert gap["lo"] <= gap["diff"] <= gap["hi"]
    assert metrics["weights"]["pneumonia tiny-resnet in-domain"]["card"]["method"] == "pretext"
    heads = {h["name"]: h for h in metrics["headline"]}
    assert heads["pneumonia AUROC, in-domain - none"]["weights"] == "mixed" and heads["tiny-resnet pneumonia: test AUROC"]["n"] >= 10
    assert metrics["onnx"]["max_abs_diff_test_films"] <= 1e-4 and "gradcam_layer4" in metrics["figures"]


def test_the_study_refuses_a_backbone_of_another_model_and_an_unknown_imbalance(tmp_path):
    outputs = tmp_path/"outputs"
    folder = save_backbone(tmp_path/"backbones"/"tiny-efficientnet-pretext", "tiny-efficientnet")
    r = run_study({"in_domain_backbone": str(folder)}, tmp_path/"other_model.yaml", outputs)
    manifest = json.loads((outputs/"transfer_resnet"/"other_model"/"run.json").read_text())
    assert r.returncode == 1 and manifest["status"] == "failed"
    assert "'tiny-efficientnet' backbone" in manifest["error"] and "'tiny-resnet'" in manifest["error"]
    r = run_study({"imbalance": "both"}, tmp_path/"both.yaml", outputs)
    manifest = json.loads((outputs/"transfer_resnet"/"both"/"run.json").read_text())
    assert r.returncode == 1 and "imbalance must be 'pos_weight' or 'sampler', got 'both'" in manifest["error"]
