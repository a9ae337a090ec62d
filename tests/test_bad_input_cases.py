"""Bad-input catalogue: what heat boxes, lung zones, case selection, cases and case reports are handed. Each case is
refused with a message naming the bad value, shape, label, variable or path, and saying what to do (see `badinput.py`).
None of them sends anything anywhere: the LLM cases stop before a request is made."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from badinput import refused  # noqa: E402
from cxr_nb.explain.cases import (  # noqa: E402
    Case, CaseSide, case_report, heat_boxes, heat_by_zone, label_probabilities, lung_zones, model_right, numeric_report,
    pick_cases, select_cases, show_heat)
from cxr_nb.models import build_model  # noqa: E402
from cxr_nb.synth import render_study  # noqa: E402

LABELS = ["Cardiomegaly", "Effusion", "Pneumothorax"]


def blob(size=64, x=20, y=30, sigma=5):
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


@pytest.fixture(scope="module")
def film():
    return render_study(seed=3, patient=11, size=64, view="PA", findings={"Pleural Effusion"})


@pytest.fixture
def ctx(film, tmp_path, monkeypatch):
    "What the cases are handed: a real SynthCXR film and its lungs, a case on it, a pair's predictions, a scratch folder."
    for name in ("OPENAI_API_KEY", "CXR_CASES_TEST_KEY"): monkeypatch.delenv(name, raising=False)
    sides = (CaseSide("baseline", [("Cardiomegaly", .6)], blob(), False, 0.0),
             CaseSide("fine-tuned", [("Effusion", .8)], blob(x=40), True, 0.5))
    case = Case(3, film.image, ["Effusion"], "Effusion", "medium", "improved", sides,
                film.masks["_lung_r"], film.masks["_lung_l"], film.masks["Pleural Effusion"])
    truth = pd.DataFrame([[1, 0, 0], [0, 1, 0]], columns=LABELS)
    probabilities = pd.DataFrame([[.7, .2, .1], [.3, .6, .1]], columns=LABELS)
    a_file = tmp_path/"report.txt"
    a_file.write_text("not a folder")
    return SimpleNamespace(film=film, lung_r=film.masks["_lung_r"], lung_l=film.masks["_lung_l"], case=case, sides=sides,
                           truth=truth, p=probabilities, folder=tmp_path/"run", a_file=a_file, monkeypatch=monkeypatch)


@pytest.fixture(scope="module")
def untrained_nih():
    "The NIH DenseNet's architecture and labels, random weights (no download, no stand-in needed: no forward pass is made)."
    return build_model("densenet121-res224-nih", weights="none")


def with_key(c, value):
    c.monkeypatch.setenv("CXR_CASES_TEST_KEY", value)
    return c


def _case_with(c, **changes):
    return Case(**{**c.case.__dict__, **changes})


CASES = {
    # heat boxes: the threshold, the map, min_area
    "threshold above 1": (lambda c: heat_boxes(blob(), threshold=1.5), ValueError, ["threshold", "[0, 1]", "1.5"]),
    "threshold below 0": (lambda c: heat_boxes(blob(), threshold=-0.1), ValueError, ["threshold", "-0.1"]),
    "threshold given as text": (lambda c: heat_boxes(blob(), threshold="0.5"), ValueError, ["threshold", "'0.5'"]),
    "threshold a percentage": (lambda c: heat_boxes(blob(), threshold=50), ValueError, ["threshold", "50"]),
    "a batch of maps, not one": (lambda c: heat_boxes(blob()[None]), ValueError, ["(H, W)", "(1, 64, 64)", "maps[i]"]),
    "a map on the 0-255 scale": (lambda c: heat_boxes(blob() * 255), ValueError, ["[0, 1]", "255", "scale it first"]),
    "a map of signed scores": (lambda c: heat_boxes(blob() - 0.5), ValueError, ["[0, 1]", "-0.5"]),
    "a map with NaN": (lambda c: heat_boxes(np.where(blob() > .9, np.nan, blob())), ValueError, ["NaN", "finite"]),
    "negative min_area": (lambda c: heat_boxes(blob(), min_area=-5), ValueError, ["min_area", "-5"]),
    "fractional min_area": (lambda c: heat_boxes(blob(), min_area=2.5), ValueError, ["min_area", "2.5", "pixels"]),
    # the map against the film and the lungs
    "map shape differs from the film": (
        lambda c: show_heat(plt.gca(), c.film.image, blob(128)), ValueError, ["(128, 128)", "(64, 64)", "film", "upsample"]),
    "map shape differs from the lung masks": (
        lambda c: heat_by_zone(blob(32), c.lung_r, c.lung_l), ValueError, ["(32, 32)", "(64, 64)", "lung_r"]),
    "only one lung mask": (lambda c: heat_by_zone(blob(), c.lung_r), ValueError, ["lung_r and lung_l", "only lung_r"]),
    "an empty lung mask": (
        lambda c: lung_zones(c.lung_r, np.zeros_like(c.lung_l)), ValueError, ["left lung", "lung_l", "empty"]),
    "a lung mask of grey levels": (
        lambda c: lung_zones(c.lung_r.astype(np.uint8) * 255, c.lung_l), ValueError, ["lung_r", "boolean", "255"]),
    "lung masks of different shapes": (
        lambda c: lung_zones(c.lung_r, np.pad(c.lung_l, 2)), ValueError, ["lung_r", "(64, 64)", "(68, 68)"]),
    # case selection
    "k below 1": (lambda c: select_cases(c.truth, c.p, c.p, k=0), ValueError, ["k must be", "(3)", "got 0"]),
    "k larger than the label set": (lambda c: select_cases(c.truth, c.p, c.p, k=7), ValueError, ["(3)", "got 7"]),
    "k not a whole number": (lambda c: select_cases(c.truth, c.p, c.p, k=2.5), ValueError, ["k must be", "2.5"]),
    "an unknown rule": (lambda c: select_cases(c.truth, c.p, c.p, rule="top-5"), ValueError, ["'top-5'", "top1", "any"]),
    "an unknown rule for one model": (lambda c: model_right(["Edema"], [("Edema", .9)], rule="best"), ValueError, ["'best'"]),
    "an empty top-k": (lambda c: model_right(["Edema"], []), ValueError, ["top is empty"]),
    "labels not in the baseline's predictions": (
        lambda c: select_cases(c.truth.assign(Hernia=0), c.p, c.p), ValueError, ["['Hernia']", "baseline", "label set"]),
    "labels not in the fine-tuned model's predictions": (
        lambda c: select_cases(c.truth, c.p, c.p.drop(columns="Effusion")), ValueError, ["['Effusion']", "fine-tuned"]),
    "labels not in the model": (
        lambda c: label_probabilities(c.model, c.images, ["Pleural Effusion", "Effusion"]), ValueError,
        ["['Pleural Effusion']", "densenet121-res224-nih", "Effusion"]),
    "probabilities that are logits": (
        lambda c: select_cases(c.truth, c.p * 10 - 3, c.p), ValueError, ["baseline", "logits", "[-2", "4]"]),
    "predictions for other films": (
        lambda c: select_cases(c.truth, c.p.iloc[:1], c.p), ValueError, ["1 rows", "truth's 2", "align"]),
    "an unknown ground truth": (
        lambda c: select_cases(c.truth.astype(float).assign(Effusion=[np.nan, 1]), c.p, c.p), ValueError,
        ["'Effusion'", "NaN", "label set"]),
    "ground truth that is not 0/1": (
        lambda c: select_cases(c.truth.assign(Effusion=[2, 0]), c.p, c.p), ValueError, ["'Effusion'", "0 or 1", "2"]),
    "ground truth not a table": (lambda c: select_cases(c.truth.to_numpy(), c.p, c.p), ValueError, ["DataFrame", "ndarray"]),
    "normal_threshold out of range": (
        lambda c: select_cases(c.truth, c.p, c.p, normal_threshold=2), ValueError, ["normal_threshold", "2"]),
    "no film per category": (
        lambda c: pick_cases(select_cases(c.truth, c.p, c.p), per_category=0), ValueError, ["per_category", "0"]),
    # cases
    "a case map of another size than its film": (
        lambda c: _case_with(c, sides=(CaseSide("baseline", [], blob(32), False, 0.0), c.sides[1])), ValueError,
        ["(32, 32)", "(64, 64)", "film"]),
    "a case with an unknown category": (lambda c: _case_with(c, category="trivial"), ValueError, ["'trivial'", "easy"]),
    "a case with an unknown verdict": (lambda c: _case_with(c, verdict="better"), ValueError, ["'better'", "improved"]),
    "a finding mask of another size": (
        lambda c: _case_with(c, finding=np.zeros((32, 32), bool)), ValueError, ["finding mask", "(32, 32)"]),
    "a report threshold out of range": (lambda c: numeric_report(c.case, threshold=2), ValueError, ["threshold", "2"]),
    # the report's folder and the LLM backend
    "an output folder that is a file": (
        lambda c: case_report(c.case, folder=c.a_file), NotADirectoryError, ["report.txt", "is a file", "give a folder"]),
    "an output folder that is a file, backend on": (
        lambda c: case_report(c.case, llm=True, folder=c.a_file), NotADirectoryError, ["report.txt", "is a file"]),
    "backend on with no folder": (lambda c: case_report(c.case, llm=True), ValueError, ["llm=True needs folder="]),
    "backend on with no key in the environment": (
        lambda c: case_report(c.case, llm=True, folder=c.folder), RuntimeError, ["OPENAI_API_KEY", "not set", "llm=False"]),
    "backend on, the named key variable unset": (
        lambda c: case_report(c.case, llm=True, folder=c.folder, key_env="CXR_CASES_TEST_KEY"), RuntimeError,
        ["CXR_CASES_TEST_KEY", "export CXR_CASES_TEST_KEY"]),
    "backend on, the key variable blank": (
        lambda c: case_report(with_key(c, "   ").case, llm=True, folder=c.folder, key_env="CXR_CASES_TEST_KEY"), RuntimeError,
        ["CXR_CASES_TEST_KEY", "not set"]),
    "a timeout of zero seconds": (
        lambda c: case_report(c.case, llm=True, folder=c.folder, timeout=0), ValueError, ["timeout", "positive", "0"]),
    "backend on, key_env not a variable name": (
        lambda c: case_report(c.case, llm=True, folder=c.folder, key_env=""), ValueError, ["key_env", "''"]),
}


@pytest.mark.parametrize("case", [pytest.param(name, id=name.replace(" ", "-")) for name in CASES])
def test_refused(case, ctx, untrained_nih):
    if "backend on" in case and "folder" not in case: pytest.importorskip("openai")   # without it the report falls back
    call, exc, named = CASES[case]
    ctx.model, ctx.images = untrained_nih, np.zeros((2, 1, 224, 224))
    refused(lambda: call(ctx), exc, *named)
    assert not (ctx.folder/"prompt.txt").exists()             # nothing was sent or saved for a refused call
    plt.close("all")
