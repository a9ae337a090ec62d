"""Bad-input catalogue of what the pneumonia-attribution study added to the library (grey inputs, headline metrics, split
overlap, crop QC, the films explained, region maps, cached films and map scores): each case is refused naming the value,
shape, column or folder, and says what to do (see `badinput.py`). Then the study itself, end to end through the CLI,
on the path `nbdev-test` does not take: the shortcut variant, and the refusal to stamp a real download."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from badinput import refused
from cxr_nb.curation import patient_overlap
from cxr_nb.datasets import pneumonia_dataset
from cxr_nb.explain.perturb import confidence_picks, occlusion_panel, region_map
from cxr_nb.explain.scores import cached_films, maps_table
from cxr_nb.metrics import headline_metrics
from cxr_nb.models import build_model, grey_input
from cxr_nb.preprocess import Preprocess, crop_table, grey_norm, shown_share
from cxr_nb.synth import write_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::cxr_nb.datasets.PatientOverlapWarning")   # the download's layout: expected
CLI = Path(sys.executable).with_name("cxr-nb")


@pytest.fixture(scope="module")
def pneumonia(tmp_path_factory):
    "A small SynthCXR pneumonia folder, its cache for a grey tiny EfficientNet, and that model."
    root = write_dataset("pneumonia", tmp_path_factory.mktemp("pn")/"pneumonia", n=16, seed=5, size=96, progress=False)
    model = grey_input(build_model("tiny-efficientnet", weights="none", labels=["Pneumonia"]), 48, "fit_pad").eval()
    data = pneumonia_dataset(root).cached(model.input, root=root.parent/"cache", progress=False)
    return root, model, data


y = np.array([1, 0, 1, 0, 1, 1.])
p = np.array([0.9, 0.2, 0.7, 0.4, 0.6, 0.8])
SPLITS = pd.DataFrame({"patientid": ["a", "a", "b", "c"], "split": ["train", "test", "train", "val"]})
QUADS = {q: np.zeros((8, 8), bool) for q in ("top-left", "top-right")}
QUADS["top-left"][:4, :4] = True; QUADS["top-right"][:4, 4:] = True

CASES = {
    "a normalisation that does not exist": (lambda d: grey_norm("grey"), ValueError, ["unknown normalisation 'grey'", "imagenet"]),
    "a grey input with an unknown resize": (
        lambda d: grey_input(build_model("tiny-efficientnet", weights="none"), resize="stretch"), ValueError, ["'stretch'"]),
    "headline metrics of one class": (lambda d: headline_metrics(np.ones(4), p[:4]), ValueError, ["both classes: 4 positive, 0 negative"]),
    "headline metrics of logits": (lambda d: headline_metrics(y, p*4 - 2), ValueError, ["probabilities must be in [0, 1]", "sigmoid"]),
    "headline metrics of two findings": (lambda d: headline_metrics(np.c_[y, y], np.c_[p, p]), ValueError, ["one finding; got 2"]),
    "headline metrics at a threshold of 1.5": (lambda d: headline_metrics(y, p, threshold=1.5), ValueError, ["threshold", "1.5"]),
    "headline metrics with a patient id missing": (
        lambda d: headline_metrics(y, p, ["a", "b", None, "c", "d", "e"]), ValueError, ["patient ids are missing", "rows [2]"]),
    "overlap of a single split": (lambda d: patient_overlap(SPLITS.assign(split="train")), ValueError, ["holds 1 split(s) ['train']"]),
    "overlap without a split column": (lambda d: patient_overlap(SPLITS.drop(columns="split")), ValueError, ["['split']", "patientid"]),
    "overlap of float patient ids": (
        lambda d: patient_overlap(SPLITS.assign(patientid=[1.0, 1.0, 2.0, 3.0])), TypeError, ["dtype={'patientid': str}"]),
    "a crop table of nothing": (lambda d: crop_table([]), ValueError, ["no image paths"]),
    "a crop table of a missing film": (lambda d: crop_table([d/"nowhere.png"]), FileNotFoundError, ["nowhere.png"]),
    "a mask of another size than its film": (
        lambda d: shown_share(np.zeros((32, 32), np.uint8), {"lungs": np.ones((16, 32), bool)}, Preprocess(16)), ValueError,
        ["'lungs' has shape (16, 32)", "(32, 32)"]),
    "picks among films without a positive": (lambda d: confidence_picks([0.9, 0.1], [0, 0]), ValueError, ["no positive film among the 2"]),
    "picks with a band upside down": (lambda d: confidence_picks(p, y, bands={"sure": (0.9, 0.8)}), ValueError, ["band 'sure'", "(0.9, 0.8)"]),
    "picks from probabilities above 1": (lambda d: confidence_picks(p + 1, y), ValueError, ["in [0, 1]"]),
    "picks with labels for other films": (lambda d: confidence_picks(p, y[:3]), ValueError, ["(6,)", "(3,)"]),
    "picks of no film per band": (lambda d: confidence_picks(p, y, n_per_band=0), ValueError, ["n_per_band", "0"]),
    "a region map with a drop per region missing": (lambda d: region_map(QUADS, np.zeros((3, 1))), ValueError, ["(3, 1)", "2 regions"]),
    "a region map of non-boolean regions": (
        lambda d: region_map({k: v.astype(int) for k, v in QUADS.items()}, np.zeros((3, 2))), ValueError, ["boolean"]),
    "an occlusion panel with drops for other films": (
        lambda d: occlusion_panel(np.zeros((2, 8, 8)), QUADS, np.zeros((3, 2))), ValueError, ["(3, 2)", "2 films and 2 regions"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused(case, tmp_path):
    call, exc, named = CASES[case]
    refused(lambda: call(tmp_path), exc, *named)


def test_cached_films_refuses_what_it_cannot_align(pneumonia, tmp_path):
    root, model, data = pneumonia
    other = write_dataset("pneumonia", tmp_path/"other", n=8, seed=6, size=96, progress=False)
    refused(lambda: cached_films(pneumonia_dataset(root), root), ValueError, "cached dataset", "CXRDataset")
    refused(lambda: cached_films(data.subset([0, 1]), other), ValueError, "not in the ground truth of", str(other), "SynthCXR folder")
    refused(lambda: cached_films(data.subset([0, 1], augment=lambda x: x), root), ValueError, "augments its films")
    films = cached_films(data.subset([0, 1, 2]), root)              # what it accepts: the cached films, masks aligned
    assert films.gray.shape == (3, 48, 48) and np.array_equal(films.gray, data.images[data.rows[:3]])


def test_maps_table_refuses_maps_that_do_not_fit(pneumonia):
    root, model, data = pneumonia
    films = cached_films(data, root)
    masks = films.mask_for(model, "Pneumonia")
    refused(lambda: maps_table(model, films.images, "Pneumonia", {}, masks), ValueError, "maps is empty")
    refused(lambda: maps_table(model, films.images, "Pneumonia", {"coarse": np.zeros((len(films), 8, 8))}, masks), ValueError,
            "'coarse'", "(16, 8, 8)", "(16, 48, 48)")
    refused(lambda: maps_table(model, films.images, "Cardiomegaly", {"flat": np.ones(masks.shape)}, masks, steps=2), ValueError,
            "'Cardiomegaly' is not one of the model's outputs")


def run_study(params: dict, path: Path, outputs: Path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump({"notebook": str(ROOT/"nbs/studies/04_pneumonia_attribution.ipynb"), "run": path.stem,
                                    "parameters": params}))
    env = {**os.environ, "CXR_OUTPUTS": str(outputs), "CXR_DATA_ROOT": str(outputs.parent/"data")}
    return subprocess.run([str(CLI), "run", "--quiet", str(path)], capture_output=True, text=True, env=env, timeout=900)


def test_the_shortcut_variant_end_to_end(tmp_path):
    "The shortcut path at smoke size: it runs, and metrics.json holds the clean-vs-stamped AUROC and the stamp's energy."
    r = run_study({"shortcut": True, "synth_n": 60, "clean_n": 30, "cpu_threads": 1}, tmp_path/"smoke.yaml",
                  tmp_path/"outputs")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path/"outputs"/"pneumonia_attribution"/"smoke"/"metrics.json").read_text())
    sc = metrics["shortcut"]
    assert sc["stamp"]["finding"] == "Pneumonia" and sc["clean_auroc"]["n"] == 30
    assert set(sc["stamp_energy"]) == {"stamped films", "clean films"} and 0 < sc["corner_share_of_film"] < 0.2
    assert sc["clean_minus_stamped_auroc"]["lo"] <= sc["clean_minus_stamped_auroc"]["hi"]
    assert metrics["test"]["auroc"]["lo"] <= metrics["test"]["auroc"]["value"] <= metrics["test"]["auroc"]["hi"]
    assert "shortcut_attribution" in metrics["figures"] and metrics["weights"]["tiny-efficientnet"]["weights_source"] == "none"


def test_the_study_refuses_to_stamp_a_real_download(tmp_path):
    r = run_study({"shortcut": True, "pneumonia_root": str(tmp_path/"chest-xray-pneumonia")}, tmp_path/"stamp_real.yaml",
                  tmp_path/"outputs")
    assert r.returncode == 1
    manifest = json.loads((tmp_path/"outputs"/"pneumonia_attribution"/"stamp_real"/"run.json").read_text())
    assert manifest["status"] == "failed" and "leave pneumonia_root empty" in manifest["error"]
