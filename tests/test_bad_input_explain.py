"""Bad-input catalogue: what the CAMs (`explain.cams`) and the explanation scores (`explain.scores`) are handed.
Each case is refused with a message naming the value, shape, layer or label, and saying what to do (see `badinput.py`).
The models are tiny and untrained (weights='none'): these cases are about inputs, not about what a model learned."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from badinput import refused
from cxr_nb.explain.cams import cam_maps, find_layers, label_index, overlay, predict_proba, vit_reshape
from cxr_nb.models import classifier_of
from cxr_nb.explain.scores import (binarize, box_masks, energy_share, iou_scores, method_maps, miou, pointing_hits,
                                   tune_threshold)
from cxr_nb.models import build_model

torch.manual_seed(0)
DENSENET = build_model("tiny-xrv-densenet", weights="none").eval()
X = torch.randn(2, 1, 64, 64)
MAPS = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
MASKS = np.zeros((2, 16, 16), bool); MASKS[:, 4:8, 4:8] = True

CAM_CASES = [
    pytest.param(lambda: cam_maps(DENSENET, X, "Cardiomegaly", method="grad-cam"), ValueError, ["grad-cam", "gradcam++"],
                 id="unknown-cam-method"),
    pytest.param(lambda: cam_maps(DENSENET, X, "Pleural Effusion"), ValueError, ["Pleural Effusion", "Effusion"],
                 id="label-name-not-in-model"),
    pytest.param(lambda: cam_maps(DENSENET, X, 99), ValueError, ["99", "14 outputs"], id="label-index-out-of-range"),
    pytest.param(lambda: label_index(DENSENET, -1), ValueError, ["-1"], id="label-index-negative"),
    pytest.param(lambda: cam_maps(DENSENET, X, 0, batch_size=0), ValueError, ["batch_size", "0"], id="batch-size-zero"),
    pytest.param(lambda: cam_maps(DENSENET, X[0], 0), ValueError, ["N x C x H x W", "(1, 64, 64)"], id="images-without-batch-axis"),
    pytest.param(lambda: cam_maps(DENSENET, X.repeat(1, 3, 1, 1), 0), ValueError, ["1-channel", "got 3"],
                 id="rgb-images-for-a-grey-model"),
    pytest.param(lambda: cam_maps(DENSENET, X.numpy(), 0), ValueError, ["ndarray"], id="numpy-images"),
    pytest.param(lambda: cam_maps(DENSENET, X, 0, layers="layer4"), ValueError, ["layer4", "features.denseblock4"],
                 id="layer-not-in-model"),
    pytest.param(lambda: cam_maps(DENSENET, X, 0, raw=True, layers=["features.denseblock3", "features.denseblock4"]),
                 ValueError, ["one layer", "features.denseblock3"], id="raw-maps-of-two-layers"),
    pytest.param(lambda: predict_proba(DENSENET, X, batch_size=-2), ValueError, ["batch_size", "-2"], id="predict-batch-negative"),
    pytest.param(lambda: classifier_of(nn.Linear(3, 2)), TypeError, ["Linear", "build_model"], id="not-a-cxr-classifier"),
    pytest.param(lambda: find_layers(build_model("tiny-resnet", weights="none"), []), ValueError, ["no CAM layer"],
                 id="empty-layer-list"),
    pytest.param(lambda: vit_reshape(torch.zeros(1, 48, 8)), ValueError, ["48 tokens", "square grid"],
                 id="vit-tokens-not-a-square-grid"),
    pytest.param(lambda: vit_reshape(torch.zeros(48, 8)), ValueError, ["(48, 8)"], id="vit-tokens-without-batch-axis"),
    pytest.param(lambda: overlay(np.zeros((8, 8), np.uint8), np.zeros((8, 9))), ValueError, ["(8, 9)", "(8, 8)"],
                 id="overlay-map-shape-differs"),
    pytest.param(lambda: overlay(np.zeros((8, 8), np.uint8), np.zeros((8, 8)), alpha=1.5), ValueError, ["alpha", "1.5"],
                 id="overlay-alpha-above-one"),
    pytest.param(lambda: method_maps(DENSENET, X, 0, "integrated-gradients"), ValueError, ["integrated-gradients"],
                 id="unknown-explanation-method"),
]

SCORE_CASES = [
    pytest.param(lambda: pointing_hits(MAPS, MASKS[:, :8]), ValueError, ["(2, 16, 16)", "(2, 8, 16)"], id="mask-shape-differs"),
    pytest.param(lambda: pointing_hits(MAPS, MASKS.astype(np.uint8)), ValueError, ["boolean", "uint8"], id="mask-not-boolean"),
    pytest.param(lambda: energy_share(np.where(MASKS, np.nan, MAPS), MASKS), ValueError, ["NaN"], id="nan-in-maps"),
    pytest.param(lambda: iou_scores(np.where(MASKS, np.inf, MAPS), MASKS), ValueError, ["infinite"], id="inf-in-maps"),
    pytest.param(lambda: energy_share(MAPS - 0.5, MASKS), ValueError, ["non-negative"], id="signed-maps-for-energy"),
    pytest.param(lambda: binarize(MAPS, 1.2), ValueError, ["1.2", "otsu"], id="threshold-above-one"),
    pytest.param(lambda: binarize(MAPS, -0.1), ValueError, ["-0.1"], id="threshold-negative"),
    pytest.param(lambda: binarize(MAPS, "triangle"), ValueError, ["triangle", "otsu"], id="threshold-unknown-method"),
    pytest.param(lambda: miou(MAPS, MASKS, thresholds=[0.5, 7]), ValueError, ["7"], id="sweep-threshold-out-of-range"),
    pytest.param(lambda: tune_threshold(MAPS, np.zeros_like(MASKS)), ValueError, ["no validation film"],
                 id="tune-on-films-without-truth"),
    pytest.param(lambda: box_masks([[(1, 1, 0, 4)]], (16, 16)), ValueError, ["film 0", "(1, 1, 0, 4)", "positive width"],
                 id="box-of-zero-width"),
    pytest.param(lambda: box_masks([[(1, float("nan"), 3, 4)]], (16, 16)), ValueError, ["nan", "finite"], id="box-with-nan"),
]


@pytest.mark.parametrize("call, exc, named", CAM_CASES + SCORE_CASES)
def test_refused(call, exc, named):
    refused(call, exc, *named)


def test_hooks_released_and_model_restored_when_a_cam_fails():
    "A layer the forward pass never reaches gives the CAM no activations: the error surfaces, the hooks and mode do not stay."
    model = build_model("tiny-resnet", weights="none").train()
    model.unused = nn.Conv2d(3, 3, 1)          # registered, never called
    with pytest.raises(Exception):
        cam_maps(model, torch.randn(2, 3, 64, 64), 0, layers="unused")
    assert not model.unused._forward_hooks and model.training
    assert all(p.grad is None for p in model.parameters())
