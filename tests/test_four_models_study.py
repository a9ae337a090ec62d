"""Bad-input catalogue: what the four-model CheXpert study adds to the library is handed. The starting models
(`shared_labels`, `check_lora`, `baseline_model`, `finetune_model`), the headline numbers (`auroc_summary`,
`paired_auroc_difference`, `threshold_comparison`) and the explanations on a study's own test split (`dataset_films`,
`localization_table`, `build_case`'s layer). Each case is refused naming the bad value, key, label or shape, and says
what to do (see `badinput.py`); nothing trains."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from badinput import refused
from cxr_nb.datasets import chexpert_dataset
from cxr_nb.explain.cases import build_case, dataset_films, localization_table, select_cases
from cxr_nb.labels import CHEXPERT_LABELS
from cxr_nb.metrics import auroc_summary, paired_auroc_difference, threshold_comparison
from cxr_nb.models import baseline_model, check_lora, finetune_model, shared_labels
from cxr_nb.synth import write_dataset

LORA = {"r": 16, "alpha": 32, "dropout": 0.1}


@pytest.fixture(scope="module")
def preds():
    "Two models' predictions on the same 40 films of 20 patients: three labels each, two of them shared."
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.4).astype(float)
    return SimpleNamespace(y=y, a=rng.random((40, 3)), names_a=["Cardiomegaly", "Edema", "Atelectasis"],
                           b=rng.random((40, 2)), names_b=["Edema", "Cardiomegaly"], patients=np.repeat(np.arange(20), 2))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    "A small SynthCXR CheXpert folder's test split, read for an untrained tiny DenseNet with a CheXpert head."
    root = write_dataset("chexpert", tmp_path_factory.mktemp("four")/"CheXpert-v1.0-small", n=40, seed=5, size=32,
                         valid_frac=0.5, progress=False)
    test = chexpert_dataset(root, "test")
    model = finetune_model("tiny-xrv-densenet", CHEXPERT_LABELS, weights="none").eval()
    return SimpleNamespace(test=test, model=model, films=dataset_films(model, test))


MODEL_CASES = {
    "a LoRA setting with an unknown key": (lambda: check_lora({"rank": 16}), ValueError, ["'rank'", "'r'", "alpha"]),
    "a LoRA rank of zero": (lambda: check_lora({"r": 0}), ValueError, ["rank r", "got 0"]),
    "a LoRA rank that is not a whole number": (lambda: check_lora({"r": 1.5}), ValueError, ["rank r", "1.5"]),
    "a LoRA dropout of 1": (lambda: check_lora({"dropout": 1.0}), ValueError, ["dropout", "[0, 1)", "1.0"]),
    "a negative LoRA alpha": (lambda: check_lora({"alpha": -2}), ValueError, ["alpha", "-2"]),
    "a LoRA setting that is not a mapping": (lambda: check_lora([16, 32]), ValueError, ["mapping", "[16, 32]"]),
    "fine-tuning with a bad LoRA key": (
        lambda: finetune_model("tiny-xrv-densenet", CHEXPERT_LABELS, "none", lora={**LORA, "target": "conv"}), ValueError,
        ["'target'", "pattern"]),
    "labels shared with an empty label list": (lambda: shared_labels("densenet121-res224-pc", []), ValueError, ["labels is empty"]),
    "an unknown model's shared labels": (lambda: shared_labels("densenet121-res224-padchest", CHEXPERT_LABELS), ValueError,
                                         ["densenet121-res224-padchest", "densenet121-res224-pc"]),
    "a baseline of an unknown model": (lambda: baseline_model("efficientnet-b0", CHEXPERT_LABELS, "none"), ValueError,
                                       ["efficientnet-b0", "efficientnet_b0"]),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_model_input_refused(case):
    call, exc, named = MODEL_CASES[case]
    refused(call, exc, *named)


METRIC_CASES = {
    "a summary of scores shaped unlike the labels": (
        lambda p: auroc_summary(p.y, p.a[:, :2], p.names_a[:2]), ValueError, ["(40, 3)", "(40, 2)", "N x C"]),
    "a summary with a missing patient id": (
        lambda p: auroc_summary(p.y, p.a, p.names_a, patients=np.where(np.arange(40) == 7, None, p.patients).astype(object)),
        ValueError, ["1 patient ids are missing", "rows [7]"]),
    "two models sharing no label": (
        lambda p: paired_auroc_difference(p.y, p.a, p.names_a, p.y[:, :1], p.b[:, :1], ["Hernia"]), ValueError,
        ["share no label", "Hernia", "Atelectasis"]),
    "two models on different numbers of films": (
        lambda p: paired_auroc_difference(p.y, p.a, p.names_a, p.y[:30, [1, 0]], p.b[:30], p.names_b), ValueError,
        ["40 predictions", "30", "same images"]),
    "two models on films in another order": (
        lambda p: paired_auroc_difference(p.y, p.a, p.names_a, p.y[::-1][:, [1, 0]], p.b, p.names_b), ValueError,
        ["differ between the two predictions", "not the same images in the same order"]),
    "a fixed threshold on logits": (
        lambda p: threshold_comparison(p.y, p.a, p.y, p.a * 10 - 5, p.names_a, fixed=0.6), ValueError,
        ["look like logits", "torch.sigmoid"]),
}


@pytest.mark.parametrize("case", list(METRIC_CASES))
def test_metric_input_refused(case, preds):
    call, exc, named = METRIC_CASES[case]
    refused(lambda: call(preds), exc, *named)


def cases_table(s):
    labels = ["Cardiomegaly", "Pleural Effusion"]
    truth = pd.DataFrame(s.test.labels, columns=CHEXPERT_LABELS)[labels]
    p = pd.DataFrame(np.full((len(truth), 2), 0.3), columns=labels)
    return select_cases(truth, p, p)


EXPLAIN_CASES = {
    "films from something that is not a dataset": (
        lambda s: dataset_films(s.model, s.films), ValueError, ["`root`", "`path` column", "ExplainSet"]),
    "films from rows that select none": (
        lambda s: dataset_films(s.model, s.test, rows=np.zeros(len(s.test), bool)), ValueError, ["no film to read", "`rows`"]),
    "a localization table without models": (
        lambda s: localization_table({}, s.films, ["Cardiomegaly"]), ValueError, ["models is empty"]),
    "a localization table asking one film for an interval": (
        lambda s: localization_table({"m": s.model}, s.films, ["Cardiomegaly"], min_films=1), ValueError, ["min_films", ">= 2", "1"]),
    "a localization label the model lacks": (
        lambda s: localization_table({"m": s.model}, s.films, ["Effusion"]), ValueError, ["'Effusion'", "Pleural Effusion"]),
    "a case map at a layer the model lacks": (
        lambda s: build_case(cases_table(s), 0, s.films, s.model, s.model, layers="features.denseblock9"), ValueError,
        ["features.denseblock9", "features.denseblock3"]),
}


@pytest.mark.parametrize("case", list(EXPLAIN_CASES))
def test_explain_input_refused(case, study):
    call, exc, named = EXPLAIN_CASES[case]
    refused(lambda: call(study), exc, *named)


def test_a_real_folder_gives_films_without_masks_and_says_why_nothing_is_scored(study, tmp_path):
    "Not a refusal: a CheXpert folder without SynthCXR's ground truth is read, and the table names why each label is skipped."
    import shutil
    real = tmp_path/"CheXpert-v1.0-small"
    shutil.copytree(study.test.root, real, ignore=shutil.ignore_patterns("masks", "synth_*"))
    films = dataset_films(study.model, chexpert_dataset(real, "test"))
    assert films.masks == {} and len(films) == len(study.test)
    table = localization_table({"m": study.model}, films, ["Cardiomegaly", "Lung Opacity"])
    assert len(table) == 0 and set(table.attrs["skipped"]) == {"Cardiomegaly", "Lung Opacity"}
    assert all("no ground-truth masks" in why for why in table.attrs["skipped"].values())
