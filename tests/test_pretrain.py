"""cxr_nb.pretrain and the mixed / auxiliary objectives it added to cxr_nb.train: what they compute (Barlow Twins by hand,
pretext targets from NIH's and CheXpert's tables, backbones saved and found under the contract, checkpoints written before
the new FitConfig fields still resuming), then the bad-input catalogue: each case refused naming the value, row, column,
label or folder, and saying what to do (see `badinput.py`)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from badinput import refused
from cxr_nb.datasets import LabelFileError, nih_dataset
from cxr_nb.models import build_model
from cxr_nb.pretrain import (AGE_CENTRE, AGE_SCALE, PRETEXT_LABELS, PRETEXT_LOSSES, at_resolution, backbone_folder,
                             barlow_twins_loss, find_backbones, load_backbone, paired_contrasts, parse_age, pretext_targets,
                             pretrain_barlow_twins, save_backbone, with_pretext)
from cxr_nb.synth import write_dataset
from cxr_nb.train import FitConfig, Predictions, evaluate, fit, read_checkpoint


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    "A small SynthCXR NIH folder, its dataset and its cache at 32 px for the tiny DenseNet."
    root = write_dataset("nih", tmp_path_factory.mktemp("pre")/"nih", n=40, seed=8, size=64, progress=False)
    data = nih_dataset(root)
    model = at_resolution(build_model("tiny-xrv-densenet", weights="none"), 32)
    return root, data, data.cached(model.input, root=root.parent/"cache", progress=False)


def test_barlow_twins_loss_by_hand_and_its_invariances():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g)
    loss, inv, red = barlow_twins_loss(z1, z2, lambd=0.01, parts=True)
    s = lambda z: (z - z.mean(0)) / (z.var(0, unbiased=False) + 1e-5).sqrt()
    c = s(z1).T @ s(z2) / 32
    off = c - torch.diag(torch.diagonal(c))
    torch.testing.assert_close(inv, ((torch.diagonal(c) - 1) ** 2).sum())
    torch.testing.assert_close(red, (off ** 2).sum())
    torch.testing.assert_close(loss, inv + 0.01 * red)
    perm = torch.randperm(32, generator=g)
    torch.testing.assert_close(barlow_twins_loss(z1[perm], z2[perm]), barlow_twins_loss(z1, z2))
    assert barlow_twins_loss(z1, z1, parts=True)[1] < 1e-4                            # identical views: invariance term ~0
    q = torch.linalg.qr(z1 - z1.mean(0))[0]
    assert barlow_twins_loss(q, q) < 1e-3                                            # identical, decorrelated: ~0 in all
    assert barlow_twins_loss(z1, z1 * 3 + 2) < 1e-3 + barlow_twins_loss(z1, z1)     # standardised: scale and shift do not matter


def test_pretext_targets_of_both_layouts(nih):
    _, data, _ = nih
    t = pretext_targets(data.csv, "nih")
    assert list(t.columns) == list(PRETEXT_LABELS) and t.notna().all().all()
    assert np.allclose(t["Age scaled"] * AGE_SCALE + AGE_CENTRE, data.csv["Patient Age"].astype(float), atol=1e-4)
    assert set(t["AP view"]) <= {0.0, 1.0} and set(t["Male"]) <= {0.0, 1.0}
    chex = pd.DataFrame({"Sex": ["Unknown", "Female"], "Age": ["44", 90], "Frontal/Lateral": ["Frontal", "Frontal"], "AP/PA": ["PA", "AP"]})
    c = pretext_targets(chex)
    assert np.isnan(c["Male"][0]) and c["AP view"].tolist() == [0.0, 1.0] and "Lateral" not in c   # no lateral film: no Lateral target
    assert parse_age(["060Y", "7", 12.0, "x"])[:3].tolist() == [60.0, 7.0, 12.0] and np.isnan(parse_age(["x"])[0])


def test_with_pretext_and_fit_on_the_mixed_objective(nih, tmp_path):
    _, data, films = nih
    pre = with_pretext(films, keep_findings=False)
    assert pre.pathologies == list(PRETEXT_LABELS) and pre.cache_path == films.cache_path
    both = with_pretext(films)
    assert both.pathologies[:-3] == films.pathologies and both.labels.shape == (len(films), len(films.pathologies) + 3)
    is_val = data.csv.patientid.astype(int).to_numpy() % 4 == 0
    torch.manual_seed(0)
    model = at_resolution(build_model("tiny-xrv-densenet", weights="none", labels=["Cardiomegaly", *PRETEXT_LABELS]), 32)
    cfg = FitConfig(epochs=1, batch_size=8, label_losses=PRETEXT_LOSSES, aux_labels={n: 0.2 for n in PRETEXT_LABELS}, monitor="val_loss")
    r = fit(model, both.subset(~is_val), both.subset(is_val), tmp_path/"aux", cfg, progress=False)
    assert [c for c in r.history if c.startswith("auroc:")] == ["auroc:Cardiomegaly"] and "val_task_loss" in r.history
    p = evaluate(model, both.subset(is_val), label_losses=cfg.label_losses, aux_labels=cfg.aux_labels)
    assert p.findings().names == ["Cardiomegaly"] and p.findings().scores.shape == (int(is_val.sum()), 1)
    assert np.isclose(p.loss, r.history.val_loss.iloc[-1], atol=1e-5)


def test_a_checkpoint_written_before_the_new_fields_resumes(nih, tmp_path):
    from safetensors.torch import save
    _, data, films = nih
    is_val = data.csv.patientid.astype(int).to_numpy() % 4 == 0
    make = lambda: at_resolution(build_model("tiny-xrv-densenet", weights="none", labels=["Cardiomegaly"]), 32)
    torch.manual_seed(0)
    fit(make(), films.subset(~is_val), films.subset(is_val), tmp_path/"old", FitConfig(epochs=1, batch_size=8, monitor="val_loss"), progress=False)
    last = tmp_path/"old"/"checkpoints"/"last.safetensors"
    tensors, record = read_checkpoint(last)
    for key in ("label_losses", "aux_labels"): del record["config"][key]           # as an older cxr-nb wrote it
    last.write_bytes(save(tensors, metadata={"cxr_nb": json.dumps(record)}))
    again = fit(make(), films.subset(~is_val), films.subset(is_val), tmp_path/"old", FitConfig(epochs=2, batch_size=8, monitor="val_loss"),
                resume=True, progress=False)
    assert again.history.epoch.tolist() == [1, 2]


def test_barlow_twins_pretraining_and_the_backbone_contract(nih, tmp_path):
    _, data, films = nih
    torch.manual_seed(0)
    model = at_resolution(build_model("tiny-xrv-densenet", weights="none", labels=["no head"]), 32)
    h = pretrain_barlow_twins(model, films, films.subset(np.arange(12)), epochs=1, batch_size=16, dims=(16, 16), progress=False)
    assert h.epoch.tolist() == [0, 1] and np.isfinite(h.val_loss).all() and np.isfinite(h.train_loss.iloc[1])
    card = {"method": "barlow_twins", "images": len(films), "resolution": 32, "epochs": 1, "data": "SynthCXR nih layout", "run": str(tmp_path)}
    folder = save_backbone(model, backbone_folder(tmp_path, "tiny-xrv-densenet", "barlow_twins"), card)
    assert folder == tmp_path/"backbones"/"tiny-xrv-densenet-barlow_twins"
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "weights.json", "weights.safetensors"]
    found = find_backbones(tmp_path)
    assert len(found) == 1 and found.iloc[0].to_dict() | {"folder": None} == {**card, "model": "tiny-xrv-densenet",
                                                                              "weights_source": "in-domain", "folder": None}
    back = load_backbone(found.folder[0], ["Edema"])
    assert back.pathologies == ["Edema"] and back.weights.source == "in-domain" and back.input.size == (32, 32)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in back.backbone.state_dict().items())
    assert len(find_backbones(tmp_path/"nothing-here")) == 0


def test_paired_contrasts_name_absent_arms_and_differences():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (80, 2)).astype(np.float32)
    a = Predictions(y + rng.normal(0, 0.5, y.shape), y, np.arange(80), ["A", "B"])
    b = Predictions(rng.normal(0, 1, y.shape), y, np.arange(80), ["A", "B"])
    t = paired_contrasts({"a": a, "b": b}, [("a - b", "a", "b"), ("c - b", "c", "b")], {"c": "weights not cached"}, n_resamples=100)
    assert t.loc["a - b", "excludes_0"] and t.loc["a - b", "n"] == 80 and t.loc["c - b", "absent"] == "c: weights not cached"


def _table(**change):
    t = pd.DataFrame({"path": ["images/a.png", "images/b.png"], "View Position": ["PA", "AP"], "Patient Gender": ["M", "F"],
                      "Patient Age": [58, 61]})
    for (row, col), value in change.items(): t.loc[row, col] = value
    return t

def _with(row, col, value):
    t = _table(); t[col] = t[col].astype(object); t.loc[row, col] = value; return t


CASES = {
    "an age that is not a number": (lambda w: pretext_targets(_with(1, "Patient Age", "sixty"), "Data_Entry.csv"), LabelFileError,
                                    ["Data_Entry.csv", "'Patient Age'", "row 1 (images/b.png)", "'sixty'", "not a number"]),
    "an impossible age (NIH 2017's 414)": (lambda w: pretext_targets(_with(0, "Patient Age", 414), "t.csv"), LabelFileError,
                                           ["row 0 (images/a.png): 414", "outside 0-120", "v2020"]),
    "a negative age": (lambda w: pretext_targets(_with(0, "Patient Age", -3), "t.csv"), LabelFileError, ["-3", "outside 0-120"]),
    "a blank age": (lambda w: pretext_targets(_with(1, "Patient Age", None), "t.csv"), LabelFileError, ["'Patient Age'", "row 1"]),
    "an unknown sex": (lambda w: pretext_targets(_with(0, "Patient Gender", "X"), "t.csv"), LabelFileError,
                       ["'Patient Gender'", "row 0 (images/a.png): 'X'", "M / F"]),
    "an unknown view": (lambda w: pretext_targets(_with(1, "View Position", "LL"), "t.csv"), LabelFileError,
                        ["'View Position'", "row 1 (images/b.png): 'LL'", "AP or PA"]),
    "a frontal/lateral value outside CheXpert's": (
        lambda w: pretext_targets(pd.DataFrame({"Sex": ["Male"], "Age": [3], "Frontal/Lateral": ["Oblique"], "AP/PA": ["AP"]}), "train.csv"),
        LabelFileError, ["train.csv", "'Frontal/Lateral'", "'Oblique'"]),
    "a table without metadata": (lambda w: pretext_targets(_table().drop(columns="Patient Gender"), "t.csv"), ValueError,
                                 ["t.csv", "no view, sex and age columns", "Patient Gender"]),
    "a dataset without a table": (lambda w: with_pretext(type("D", (), {"csv": None})()), ValueError, ["no table"]),
    "pretext columns already there": (lambda w: with_pretext(with_pretext(w["films"])), ValueError, ["already has label columns", "AP view"]),
    "a loss kind that does not exist": (lambda w: FitConfig(label_losses={"Age scaled": "mse"}), ValueError, ["'mse'", "smooth_l1"]),
    "an auxiliary weight of 0": (lambda w: FitConfig(aux_labels={"Male": 0}), ValueError, ["'Male': 0", "> 0"]),
    "an auxiliary weight given as True": (lambda w: FitConfig(aux_labels={"Male": True}), ValueError, ["'Male': True"]),
    "auxiliary labels as a list": (lambda w: FitConfig(aux_labels=["Male"]), ValueError, ["mapping", "['Male']"]),
    "an auxiliary label the model lacks": (lambda w: FitConfig(aux_labels={"Sex": 1.0}).objective(["Cardiomegaly", "Male"]), ValueError,
                                           ["['Sex']", "not outputs", "Male"]),
    "monitoring AUROC with every output auxiliary": (
        lambda w: fit(at_resolution(build_model("tiny-xrv-densenet", weights="none", labels=["Male"]), 32), w["pre"], w["pre"], w["d"]/"x1",
                      FitConfig(aux_labels={"Male": 1.0})), ValueError, ["monitor 'mean_auroc'", "monitor 'val_loss'"]),
    "monitoring mae without a regression output": (
        lambda w: fit(at_resolution(build_model("tiny-xrv-densenet", weights="none", labels=["Male"]), 32), w["pre"], w["pre"], w["d"]/"x2",
                      FitConfig(monitor="mae")), ValueError, ["monitor 'mae'", "regression output"]),
    "Barlow Twins views of different shapes": (lambda w: barlow_twins_loss(torch.zeros(4, 3), torch.zeros(4, 2)), ValueError, ["(4, 3)", "(4, 2)"]),
    "a Barlow Twins batch of one film": (lambda w: barlow_twins_loss(torch.zeros(1, 3), torch.zeros(1, 3)), ValueError, ["batch of 1"]),
    "too few films for a Barlow Twins batch": (
        lambda w: pretrain_barlow_twins(at_resolution(build_model("tiny-xrv-densenet", weights="none"), 32), w["films"].subset(np.arange(4)),
                                        batch_size=8, progress=False), ValueError, ["4 films make no full batch of 8", "batch_size"]),
    "a resolution too small": (lambda w: at_resolution(build_model("tiny-resnet", weights="none"), 4), ValueError, ["4", "at least 16"]),
    "a backbone card with an unknown method": (
        lambda w: save_backbone(build_model("tiny-resnet", weights="none"), w["d"]/"b", {**w["card"], "method": "simclr"}), ValueError,
        ["'simclr'", "pretext", "barlow_twins"]),
    "a backbone card without images": (
        lambda w: save_backbone(build_model("tiny-resnet", weights="none"), w["d"]/"b", {k: v for k, v in w["card"].items() if k != "images"}),
        ValueError, ["lacks ['images']"]),
    "a backbone card of another model": (
        lambda w: save_backbone(build_model("tiny-resnet", weights="none"), w["d"]/"b", {**w["card"], "model": "resnet50"}), ValueError,
        ["'resnet50'", "'tiny-resnet'"]),
    "a backbone card that is not in-domain": (
        lambda w: save_backbone(build_model("tiny-resnet", weights="none"), w["d"]/"b", {**w["card"], "weights_source": "published"}),
        ValueError, ["'published'", "in-domain"]),
    "a backbone card with a fractional resolution": (
        lambda w: save_backbone(build_model("tiny-resnet", weights="none"), w["d"]/"b", {**w["card"], "resolution": 32.5}), ValueError,
        ["'resolution': 32.5", "positive integers"]),
    "a backbone card without its weights": (lambda w: find_backbones(w["orphan"]), FileNotFoundError, ["without weights.safetensors", "delete"]),
    "paired arms on different films": (
        lambda w: paired_contrasts({"a": w["p"], "b": Predictions(w["p"].scores[:5], w["p"].labels[:5], np.arange(5), ["A"])},
                                   [("a - b", "a", "b")], n_resamples=10), ValueError, ["8 predictions", "5", "same images"]),
}


@pytest.fixture(scope="module")
def world(nih, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    _, _, films = nih
    orphan = d/"orphan"
    (orphan/"backbones"/"m-pretext").mkdir(parents=True)
    card = {"method": "pretext", "images": 10, "resolution": 32, "epochs": 1, "data": "x", "run": str(orphan)}
    (orphan/"backbones"/"m-pretext"/"card.json").write_text(json.dumps({**card, "model": "m", "weights_source": "in-domain"}))
    y = np.array([[1], [0], [1], [0], [1], [0], [1], [0]], np.float32)
    return {"d": d, "films": films, "pre": with_pretext(films, keep_findings=False), "card": card, "orphan": orphan,
            "p": Predictions(y + 0.1, y, np.arange(8), ["A"])}


@pytest.mark.parametrize("case", list(CASES))
def test_refused(case, world):
    call, exc, named = CASES[case]
    refused(lambda: call(world), exc, *named)
