"""Bad-input catalogue: what the stand-in zoo and the weights records are handed. Each case is refused naming the
model, the folder, the seed or the field, and says what to do (see `badinput.py`). None of them trains anything."""
from __future__ import annotations

import json

import pytest

from badinput import refused
from cxr_nb.core import RunFolder
from cxr_nb.models import CARD_NAME, build_model, model_spec, resolve_weights
from cxr_nb.synth import write_dataset
from cxr_nb.zoo import Recipe, Zoo, check_unseen


@pytest.fixture
def empty_zoo(tmp_path):
    return Zoo(tmp_path/"zoo")


@pytest.fixture
def foreign_standin(tmp_path):
    "A folder holding weights whose card says they stand in for the NIH DenseNet."
    folder = tmp_path/"standin"
    folder.mkdir()
    (folder/"weights.safetensors").write_bytes(b"")
    (folder/CARD_NAME).write_text(json.dumps({"standin_for": "densenet121-res224-nih", "key": "abc"}))
    return folder/"weights.safetensors"


CASES = {
    "auto, with the stand-in not built": (
        lambda z, f: build_model("densenet121-res224-nih", weights="auto", zoo=z), FileNotFoundError,
        ["densenet121-res224-nih", "cxr-nb zoo build densenet121-res224-nih", "make demo", "weights='none'"]),
    "published never falls back": (
        lambda z, f: resolve_weights(model_spec("densenet121-res224-pc"), "published", z), FileNotFoundError,
        ["densenet121-res224-pc", "weights='auto' to fall back"]),
    "standin for an ImageNet model": (
        lambda z, f: resolve_weights(model_spec("resnet50"), "standin", z), ValueError, ["resnet50 has no stand-in"]),
    "a stand-in file given for another model": (
        lambda z, f: resolve_weights(model_spec("densenet121-res224-chex"), f, z), ValueError,
        ["stand-in for 'densenet121-res224-nih'", "not for 'densenet121-res224-chex'"]),
    "a recipe for an ImageNet model": (
        lambda z, f: Recipe("efficientnet_b0"), ValueError, ["efficientnet_b0", "no honest stand-in"]),
    "a recipe with an unknown site": (
        lambda z, f: Recipe("densenet121-res224-nih", sites=("mimic",)), ValueError, ["mimic", "nih", "padchest", "chexpert"]),
    "a recipe with a non-positive size": (
        lambda z, f: Recipe("densenet121-res224-nih", size=0), ValueError, ["Recipe.size", "0"]),
    "building a model the zoo has no recipe for": (
        lambda z, f: z.build(["resnet18"]), ValueError, ["resnet18", "densenet121-res224-nih"]),
    "a run folder given something that is not a weights record": (
        lambda z, f: RunFolder(z.root/"run").record_weights("baseline", "published"), ValueError,
        ["baseline", "weights_record(model)"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused(case, empty_zoo, foreign_standin):
    call, exc, named = CASES[case]
    refused(lambda: call(empty_zoo, foreign_standin), exc, *named)


def test_a_study_folder_a_standin_trained_on(tmp_path):
    card = {"standin_for": "densenet121-res224-nih", "key": "k1", "sites": ["nih"],
            "seeds": {"nih": {"train": 9001, "held_out": 9101}}}
    seen = write_dataset("nih", tmp_path/"nih", n=4, seed=9001, size=32, progress=False)
    refused(lambda: check_unseen(card, seen), ValueError, str(seen), "9001", "densenet121-res224-nih", "another seed")
    held = write_dataset("nih", tmp_path/"held", n=4, seed=9101, size=32, progress=False)
    assert check_unseen(card, held).seed.tolist() == [9101]          # its own held-out films are fine
