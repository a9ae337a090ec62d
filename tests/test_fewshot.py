"""Bad-input catalogue of `cxr_nb.fewshot` (the few-shot probe vs fine-tune study's library): each case is refused naming
the value, key, column, finding, N or backbone, and says what to do (see `badinput.py`). Plus what it must accept: a
whole small sweep on a tiny ResNet, whose training sets are exactly N + N and whose summary CIs hold their points."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from badinput import refused
from cxr_nb.fewshot import (FinetuneConfig, check_backbones, curated_dataset, equivalent_stage, finetune_scores, load_backbones,
                            paired_difference, plot_auroc_vs_shots, probe_scores, run_cell, run_sweep, scaled_thresholds,
                            split_backbone, sweep_features, sweep_plan, sweep_summary, synth_finding)
from cxr_nb.curation import load_padchest_csv, select_rare_findings
from cxr_nb.labels import PADCHEST_CSV
from cxr_nb.models import build_model
from cxr_nb.synth import PRIORS, write_dataset

RARE = {"Hiatal Hernia": .2, "Callus Rib Fracture": .2, "Fibrosis": .2, "Bronchiectasis": .2}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    "A small curated PadChest-layout set, a tiny random ResNet's features of it, and a plan of 1- and 2-shot trials."
    torch.set_num_threads(1)
    root = write_dataset("padchest", tmp_path_factory.mktemp("fs")/"padchest", n=300, seed=73, size=64,
                         priors={**{k: v*0.3 for k, v in PRIORS.items()}, **RARE}, lateral_p=0.1, progress=False)
    rf = select_rare_findings(load_padchest_csv(root/PADCHEST_CSV), min_train=2, min_val=2, unknown_exclusions="ignore")
    films = curated_dataset(root, rf.images)
    arms, _ = load_backbones({"random init": {"model": "tiny-resnet", "weights": "none"}})
    data = films.cached(arms["random init"].input, root=root.parent/"cache", progress=False)
    sf = sweep_features(arms["random init"], data, "layer3")
    train = films.csv.split.to_numpy() == "train"
    plan = sweep_plan(films.labels, films.pathologies, train, films.pathologies[:1], shots=(1, 2), seeds=(0,))
    return films, sf, train, plan, np.flatnonzero(~train)


def test_a_small_sweep_runs_and_summarises(sweep):
    films, sf, train, plan, held = sweep
    results = run_sweep({"random init": sf}, plan, films.labels, films.pathologies, held, config=FinetuneConfig(epochs=1), progress=False)
    assert len(results) == 2 * len(plan) and results.auroc.between(0, 1).all()
    summary = sweep_summary(results, films.labels, films.pathologies, held, films.csv.patientid.to_numpy()[held], n_resamples=100)
    assert ((summary.lo <= summary.auroc + 1e-9) & (summary.auroc <= summary.hi + 1e-9)).all()
    d = paired_difference(results, ("random init", "fine-tune"), ("random init", "linear probe"), 2, films.labels, films.pathologies, held)
    assert d["lo"] <= d["diff"] <= d["hi"] and d["trials"] == 1


SPEC_CASES = {
    "a threshold scale of no films": (lambda: scaled_thresholds(0), ValueError, ["positive count", "0"]),
    "a selection without its columns": (lambda: curated_dataset(".", pd.DataFrame({"ImageID": ["a.png"]})), ValueError,
                                        ["rare-finding selection", "PatientID", "finding"]),
    "an empty selection": (lambda: curated_dataset(".", pd.DataFrame(columns=["ImageID", "PatientID", "Projection", "finding", "split"])),
                           ValueError, ["selection is empty"]),
    "a finding SynthCXR does not draw": (lambda: synth_finding("kyphosis"), ValueError, ["'kyphosis'", "no SynthCXR finding"]),
    "backbones that are not a mapping": (lambda: check_backbones(["tiny-resnet"]), ValueError, ["mapping", "tiny-resnet"]),
    "a backbone setting that is a string": (lambda: check_backbones({"r": "tiny-resnet"}), ValueError, ["backbone 'r'", "mapping"]),
    "a backbone key misspelt": (lambda: check_backbones({"r": {"model": "tiny-resnet", "wieghts": "none"}}), ValueError,
                                ["backbone 'r'", "['wieghts']", "optional"]),
    "a backbone without a model": (lambda: check_backbones({"r": {"weights": "none"}}), ValueError, ["backbone 'r' names no model"]),
    "a backbone model misspelt": (lambda: check_backbones({"r": {"model": "tiny-resnt"}}), ValueError, ["'tiny-resnt'", "tiny-resnet"]),
    "a backbone size of -1": (lambda: check_backbones({"r": {"model": "tiny-resnet", "size": -1}}), ValueError, ["size", "-1"]),
    "a backbone size as text": (lambda: check_backbones({"r": {"model": "tiny-resnet", "size": "64"}}), ValueError, ["size", "'64'"]),
    "a stage no ResNet has": (lambda: equivalent_stage(build_model("tiny-resnet", "none"), "layer5"), ValueError,
                              ["'layer5'", "'layer1'..'layer4'", "layer3"]),
    "a split of an EfficientNet": (lambda: split_backbone(build_model("tiny-efficientnet", "none"), "features.2"), ValueError,
                                   ["ResNet and DenseNet", "tiny-efficientnet"]),
    "a split at a stage the DenseNet lacks": (lambda: split_backbone(build_model("tiny-xrv-densenet", "none"), "features.denseblock9"),
                                              ValueError, ["'features.denseblock9'", "denseblock3"]),
    "fine-tuning for 0 epochs": (lambda: FinetuneConfig(epochs=0), ValueError, ["epochs", "positive integer", "0"]),
    "a head learning rate of 0": (lambda: FinetuneConfig(lr_head=0.0), ValueError, ["lr_head", "positive number"]),
    "a negative weight decay": (lambda: FinetuneConfig(weight_decay=-1e-4), ValueError, ["weight_decay", "non-negative", "-0.0001"]),
    "a batch of 2.5 films": (lambda: FinetuneConfig(batch_size=2.5), ValueError, ["batch_size", "2.5"]),
    "a summary of a table without scores": (lambda: sweep_summary(pd.DataFrame({"backbone": []}), np.zeros((1, 1)), ["f"], [0]),
                                            ValueError, ["sweep results", "scores"]),
    "a figure of a table without CIs": (lambda: plot_auroc_vs_shots(pd.DataFrame({"backbone": ["r"], "method": ["fine-tune"]})),
                                        ValueError, ["sweep summary", "lo", "hi"]),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_refused(case):
    call, exc, named = SPEC_CASES[case]
    refused(call, exc, *named)


def test_plans_that_cannot_be_drawn_are_refused(sweep):
    films, sf, train, plan, held = sweep
    refused(lambda: sweep_plan(films.labels, films.pathologies, train, ["kyphosis"]), ValueError, "unknown finding(s) ['kyphosis']")
    refused(lambda: sweep_plan(films.labels, films.pathologies, train[:3], films.pathologies[:1]), ValueError, "(3,)", f"({len(films)},)")
    refused(lambda: sweep_plan(films.labels, films.pathologies, train, films.pathologies[:1], shots=()), ValueError, "non-empty")
    refused(lambda: sweep_plan(films.labels, films.pathologies, train, films.pathologies[:1], shots=(999,)), ValueError,
            "no N of [999] fits", films.pathologies[0])
    dropped = sweep_plan(films.labels, films.pathologies, train, films.pathologies[:1], shots=(1, 999))
    assert dropped.attrs["dropped"] == [999] and set(dropped.n) == {1}           # said, not silently dropped


def test_cells_that_cannot_train_are_refused(sweep):
    films, sf, train, plan, held = sweep
    y = films.labels[:, 0]
    one_class = plan.indices.iloc[0][y[plan.indices.iloc[0]] == 1]
    refused(lambda: probe_scores(sf.features, y, one_class, held), ValueError, "both classes", "1 training films")
    refused(lambda: finetune_scores(sf, y, one_class, held, FinetuneConfig(epochs=1)), ValueError, "both classes")
    refused(lambda: run_cell(sf, "lora", films.labels, films.pathologies, films.pathologies[0], 1, 0, plan.indices.iloc[0], held),
            ValueError, "unknown method 'lora'", "fine-tune")
    refused(lambda: run_sweep({"r": sf}, plan, films.labels, films.pathologies, held, methods=["probe"]), ValueError, "['probe']")
    refused(lambda: run_sweep({"r": sf}, plan, films.labels, films.pathologies, plan.indices.iloc[0]), ValueError,
            "evaluation film(s) are in training sets too")


def test_comparisons_of_arms_that_did_not_run_are_refused(sweep):
    films, sf, train, plan, held = sweep
    results = run_sweep({"random init": sf}, plan, films.labels, films.pathologies, held, methods=["linear probe"], progress=False)
    refused(lambda: paired_difference(results, ("random init", "fine-tune"), ("random init", "linear probe"), 1, films.labels,
                                      films.pathologies, held), ValueError, "no trial at N=1", "fine-tune", "linear probe")


def test_backbones_that_cannot_be_had(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path/"torch"))                      # no ImageNet file, whatever this machine has
    refused(lambda: load_backbones({"ImageNet": {"model": "resnet18", "weights": "published"}}), FileNotFoundError, "resnet18")
    found, absent = load_backbones({"ImageNet": {"model": "resnet18", "weights": "published", "optional": True}}, tmp_path/"no-run")
    assert not found and "resnet18" in absent["ImageNet"] and "run the pretraining study first" in absent["in-domain"]
