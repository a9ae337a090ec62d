"""Bad-input catalogue: what the training engine is handed. Each case is refused naming the value, the label,
the file or the field, and says what to do (see `badinput.py`). Nothing is trained on a wrong target and no run
folder is overwritten."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from badinput import refused
from cxr_nb.datasets import synth_dataset
from cxr_nb.models import build_model
from cxr_nb.synth import write_dataset
from cxr_nb.train import FitConfig, fit, n_shot_indices, n_shot_plan, pos_weights, read_checkpoint, target_labels


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("badtrain")
    root = write_dataset("nih", d/"nih", n=80, seed=3, size=72, progress=False)
    spec = build_model("tiny-xrv-densenet", weights="none").spec
    data = synth_dataset(root).cached(spec.input, root=d/"cache", progress=False)
    val = data.csv.patientid.astype(int).to_numpy() % 4 == 0
    train, valid = data.subset(~val), data.subset(val)
    small = FitConfig(epochs=1, batch_size=16)
    fit(build_model("tiny-xrv-densenet", weights="none", labels=["Cardiomegaly"]), train, valid, d/"done", small, progress=False)
    save_file({"w": torch.zeros(2)}, d/"plain.safetensors")
    torch.save({"w": torch.zeros(2)}, d/"pickled.pt")
    nan_labels = train.subset(np.arange(len(train)))
    nan_labels.labels = np.array(nan_labels.labels, dtype=np.float32)
    nan_labels.labels[:, nan_labels.pathologies.index("Edema")] = np.nan
    one_class = valid.subset(np.flatnonzero(np.asarray(valid.labels)[:, valid.pathologies.index("Cardiomegaly")] == 0))
    return {"d": d, "train": train, "val": valid, "small": small, "nan": nan_labels, "one_class": one_class}


def model(*labels):
    return build_model("tiny-xrv-densenet", weights="none", labels=list(labels) or ["Cardiomegaly"])


CASES = {
    "unknown-optimizer": (lambda w: FitConfig(optimizer="adam"), ValueError, ["optimizer='adam'", "('adamw', 'sgd')"]),
    "unknown-schedule": (lambda w: FitConfig(schedule="step"), ValueError, ["schedule='step'"]),
    "negative-lr": (lambda w: FitConfig(lr=-1e-3), ValueError, ["lr=-0.001"]),
    "zero-epochs": (lambda w: FitConfig(epochs=0), ValueError, ["FitConfig.epochs", "0"]),
    "unknown-monitor": (lambda w: FitConfig(monitor="accuracy"), ValueError, ["monitor='accuracy'", "'mean_auroc'"]),
    "regression-with-auroc": (lambda w: FitConfig(loss="smooth_l1"), ValueError, ["monitor='val_loss'"]),
    "fp16-on-cpu": (lambda w: fit(model(), w["train"], w["val"], w["d"]/"fp16", FitConfig(precision="fp16", cpu=True)),
                    ValueError, ["precision='fp16' needs a GPU"]),
    "labels-share-nothing": (lambda w: fit(model("Pneumoperitoneum"), w["train"], w["val"], w["d"]/"x1", w["small"]),
                             ValueError, ["['Pneumoperitoneum'] share nothing", "swap_head"]),
    "an-output-without-column": (lambda w: fit(model("Cardiomegaly", "Pneumoperitoneum"), w["train"], w["val"], w["d"]/"x2", w["small"]),
                                 ValueError, ["['Pneumoperitoneum'] have no label column"]),
    "dataset-without-labels": (lambda w: fit(model(), torch.utils.data.TensorDataset(torch.zeros(4, 1, 64, 64)), w["val"], w["d"]/"x3"),
                               ValueError, ["TensorDataset has no `pathologies` and `labels`"]),
    "all-nan-column": (lambda w: target_labels(model("Edema"), w["nan"]), ValueError, ["['Edema'] are unknown (NaN) for every image"]),
    "pos-weight-without-positives": (lambda w: pos_weights(np.zeros((5, 2)), ["Hernia", "Mass"]), ValueError,
                                     ["Hernia (0 positive, 5 negative)", "Mass (0 positive"]),
    "class-weights-length": (lambda w: fit(model(), w["train"], w["val"], w["d"]/"x4", FitConfig(class_weights=[1.0, 2.0])),
                             ValueError, ["class_weights has 2 values for 1 labels"]),
    "monitor-unknown-label": (lambda w: fit(model(), w["train"], w["val"], w["d"]/"x5", FitConfig(monitor="auroc:Mass")),
                              ValueError, ["monitor 'auroc:Mass'", "no label 'Mass'"]),
    "monitor-undefined-on-val": (lambda w: fit(model(), w["train"], w["one_class"], w["d"]/"x6", w["small"]), ValueError,
                                 ["monitor 'mean_auroc' is undefined", "Cardiomegaly"]),
    "run-folder-taken": (lambda w: fit(model(), w["train"], w["val"], w["d"]/"done", w["small"]), FileExistsError,
                         ["already holds a training run", "resume=True", "nothing was overwritten"]),
    "resume-other-config": (lambda w: fit(model(), w["train"], w["val"], w["d"]/"done", FitConfig(epochs=1, batch_size=8), resume=True),
                            ValueError, ["different configuration", "'batch_size': (16, 8)"]),
    "resume-other-model": (lambda w: fit(model("Effusion"), w["train"], w["val"], w["d"]/"done", w["small"], resume=True), ValueError,
                           ["checkpoint of tiny-xrv-densenet with labels ['Cardiomegaly']", "['Effusion']"]),
    "checkpoint-missing": (lambda w: read_checkpoint(w["d"]/"nope.safetensors"), FileNotFoundError, ["nope.safetensors"]),
    "checkpoint-foreign-safetensors": (lambda w: read_checkpoint(w["d"]/"plain.safetensors"), ValueError,
                                       ["plain.safetensors is a safetensors file but not a cxr-nb checkpoint"]),
    "checkpoint-pickle": (lambda w: read_checkpoint(w["d"]/"pickled.pt"), ValueError, ["pickled.pt is not a safetensors checkpoint"]),
    "n-shot-too-many": (lambda w: n_shot_indices(np.array([[1.0], [0], [0], [np.nan]]), ["Mass"], "Mass", 2), ValueError,
                        ["2-shot Mass", "1 positive and 2 negative", "at most 1"]),
    "n-shot-unknown-finding": (lambda w: n_shot_indices(np.zeros((3, 1)), ["Mass"], "Nodule", 1), ValueError, ["'Nodule'", "['Mass']"]),
    "n-shot-zero": (lambda w: n_shot_indices(np.array([[1.0], [0]]), ["Mass"], "Mass", 0), ValueError, ["n must be a positive integer"]),
    "n-shot-plan": (lambda w: n_shot_plan(np.array([[1.0], [0], [1], [0]]), ["Mass"], ["Mass"], shots=(1, 2, 5)), ValueError,
                    ["Mass: 5"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_training_input_is_refused_naming_the_value(world, case):
    call, exc, named = CASES[case]
    refused(lambda: call(world), exc, *named)


def test_a_refused_resume_leaves_the_run_as_it_was(world):
    last = world["d"]/"done"/"checkpoints"/"last.safetensors"
    before = last.read_bytes()
    with pytest.raises(ValueError):
        fit(model(), world["train"], world["val"], world["d"]/"done", FitConfig(epochs=1, batch_size=8), resume=True)
    with pytest.raises(FileExistsError):
        fit(model(), world["train"], world["val"], world["d"]/"done", world["small"])
    assert last.read_bytes() == before
