"""The few-shot probe vs fine-tune study end to end through the CLI, on the path `nbdev-test` does not take: an in-domain
backbone saved by a pretraining run joins the sweep (beside an ImageNet arm that is absent, with its reason), and
metrics.json holds the plan, the summary, the paired differences and the headlines. Its params files pass the runner's
parameter check."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxr_nb.models import build_model
from cxr_nb.pretrain import backbone_folder, save_backbone

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cxr-nb")
NOTEBOOK = ROOT/"nbs/studies/06_fewshot_probe_vs_finetune.ipynb"


def cli(args: list, outputs: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "CXR_OUTPUTS": str(outputs), "CXR_DATA_ROOT": str(outputs.parent/"data"), "TORCH_HOME": str(outputs.parent/"torch")}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.parametrize("variant", ["demo", "full"])
def test_the_params_files_pass_the_parameter_check(variant, tmp_path):
    r = cli(["run", "--dry-run", str(ROOT/f"params/fewshot_probe_vs_finetune/{variant}.yaml")], tmp_path/"outputs", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "would run" in r.stdout


def test_the_study_with_an_in_domain_backbone_end_to_end(tmp_path):
    outputs = tmp_path/"outputs"
    run_dir = outputs/"pretraining"/"smoke"
    save_backbone(build_model("tiny-resnet", "none"), backbone_folder(run_dir, "tiny-resnet", "barlow_twins"),
                  {"method": "barlow_twins", "images": 40, "resolution": 64, "epochs": 1, "data": "SynthCXR nih layout", "run": str(run_dir)})
    params = {"pretraining_run": "pretraining/smoke", "shots": [1, 2], "cpu_threads": 1, "n_resamples": 200}
    path = tmp_path/"smoke.yaml"
    path.write_text(yaml.safe_dump({"notebook": str(NOTEBOOK), "run": "smoke", "parameters": params}))
    r = cli(["run", "--quiet", str(path)], outputs)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((outputs/"fewshot_probe_vs_finetune"/"smoke"/"metrics.json").read_text())
    assert metrics["weights"]["in-domain tiny-resnet-barlow_twins"]["weights_source"] == "in-domain"
    assert "ImageNet" in metrics["backbones"]["absent"] and "in-domain" not in metrics["backbones"]["absent"]
    assert metrics["plan"]["shots"] == [1, 2] and metrics["plan"]["trials"] == 2
    for row in metrics["summary"]:
        assert row["lo"] <= row["auroc"] + 1e-9 and row["auroc"] <= row["hi"] + 1e-9
    names = [h["name"] for h in metrics["headline"]]
    assert "fine-tune - probe AUROC, 2-shot (in-domain tiny-resnet-barlow_twins)" in names
    assert {h["weights"] for h in metrics["headline"]} <= {"in-domain", "mixed"}
    assert {"auroc_vs_shots", "rare_findings", "layerwise_gradcam"} <= set(metrics["figures"])
    assert metrics["layerwise_gradcam"]["backbone"] == "in-domain tiny-resnet-barlow_twins"


def test_a_focus_backbone_that_is_not_an_arm_fails_the_run(tmp_path):
    path = tmp_path/"focus.yaml"
    path.write_text(yaml.safe_dump({"notebook": str(NOTEBOOK), "run": "focus", "parameters": {"focus_backbone": "ImageNet", "cpu_threads": 1}}))
    r = cli(["run", "--quiet", str(path)], tmp_path/"outputs")
    assert r.returncode == 1
    manifest = json.loads((tmp_path/"outputs"/"fewshot_probe_vs_finetune"/"focus"/"run.json").read_text())
    assert manifest["status"] == "failed" and "focus_backbone 'ImageNet' is not among the arms" in manifest["error"]
