"""Study notebooks run end to end through the `cxr-nb` CLI on what their params point at (their defaults run under
nbdev-test): here, the domain-gap study on real folders given by `root`, a layout folder and a plain folder of films."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from cxr_nb.synth import write_dataset

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cxr-nb")


def run_study(params: dict, path: Path, outputs: Path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(params))
    env = {**os.environ, "CXR_OUTPUTS": str(outputs)}
    return subprocess.run([str(CLI), "run", "--quiet", str(path)], capture_output=True, text=True, env=env, timeout=600)


def test_domain_gap_study_on_folders_given_by_root(tmp_path):
    nih = write_dataset("nih", tmp_path/"nih", n=14, size=64, seed=3, progress=False)
    plain = tmp_path/"films"
    plain.mkdir()
    for png in sorted((write_dataset("padchest", tmp_path/"pc", n=14, size=64, seed=4, progress=False)/"images").glob("*.png"))[:9]:
        shutil.copy(png, plain/png.name)
    params = {"notebook": str(ROOT/"nbs/studies/02_domain_gap.ipynb"), "run": "folders",
              "parameters": {"sources": {"NIH folder": {"layout": "nih", "root": str(nih)},
                                         "plain films": {"layout": "folder", "root": str(plain)}},
                             "n_images": 8, "image_size": 32, "reference_pair": ["NIH folder", "plain films"], "n_resamples": 200}}
    r = run_study(params, tmp_path/"folders.yaml", tmp_path/"outputs")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path/"outputs"/"domain_gap"/"folders"
    metrics = json.loads((out/"metrics.json").read_text())
    assert {n: s["simulated"] for n, s in metrics["sources"].items()} == {"NIH folder": False, "plain films": False}
    assert metrics["sources"]["plain films"]["films"] == 9 and metrics["sources"]["NIH folder"]["folder"] == str(nih)
    (gap,) = metrics["gaps"]
    assert (gap["a"], gap["b"], gap["n_a"], gap["n_b"]) == ("NIH folder", "plain films", 8, 8)
    assert gap["mean_diff_lo"] <= gap["mean_diff"] <= gap["mean_diff_hi"]
    assert set(metrics["reference"]) == {"PadChest study: 500 real frontal films each, 224 px",
                                         "this run: NIH folder / plain films, 8 / 8 films, 32 px"}
    assert all((out/f).is_file() for f in metrics["figures"].values()) and (out/"gaps.csv").is_file()
    assert json.loads((out/"run.json").read_text())["status"] == "completed"


def test_domain_gap_study_refuses_a_source_without_layout(tmp_path):
    params = {"notebook": str(ROOT/"nbs/studies/02_domain_gap.ipynb"), "run": "bad",
              "parameters": {"sources": {"a": {"layout": "nih"}, "b": {"root": str(tmp_path)}}}}
    r = run_study(params, tmp_path/"bad.yaml", tmp_path/"outputs")
    assert r.returncode == 1
    manifest = json.loads((tmp_path/"outputs"/"domain_gap"/"bad"/"run.json").read_text())
    assert manifest["status"] == "failed" and "source 'b'" in manifest["error"]
