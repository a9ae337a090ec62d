"""Bad-input catalogue: what the perturbation methods (`cxr_nb.explain.perturb`) are handed. Maps, segments, masks, sizes,
fillers, windows, strides, labels and batch sizes that do not fit are refused before any forward pass, and the message
names the offending value or shape and says what to give instead (see `badinput.py`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from badinput import refused
from cxr_nb.explain.perturb import (cumulative_removal, deletion_curve, filler_images, insertion_curve, occlude,
                                    occlusion_drop, occlusion_map, occlusion_mask, random_maps, segment_heatmap,
                                    segment_table, slic_segments, superpixel_drops)
from cxr_nb.models import build_model
from cxr_nb.preprocess import normalize
from cxr_nb.synth import render_study

SIZE = 64


@pytest.fixture(scope="module")
def kit():
    "A tiny ResNet, two SynthCXR films at 64 px (grey and normalised), their superpixels, a map per film."
    torch.manual_seed(0)
    model = build_model("tiny-resnet", weights="none").eval()
    gray = np.stack([render_study(3, p, size=SIZE, view="PA").image for p in (1, 2)])
    images = normalize(torch.from_numpy(gray)[:, None], "imagenet")
    segments = slic_segments(gray, n_segments=20)
    return {"model": model, "gray": gray, "images": images, "segments": segments, "maps": random_maps((2, SIZE, SIZE)),
            "drops": np.linspace(-0.1, 0.2, segments.max() + 1)[None].repeat(2, 0)}


def with_nan(maps):
    maps = maps.copy(); maps[1, 3, 4] = np.nan
    return maps


CENTRE = np.zeros((SIZE, SIZE), bool)
CENTRE[16:48, 16:48] = True

CASES = [
    # maps for deletion / insertion curves
    pytest.param(lambda k: deletion_curve(k["model"], k["images"], 0, k["maps"][:, :32, :32]), ["(2, 32, 32)", "(2, 3, 64, 64)"],
                 id="map-shape-differs-from-image"),
    pytest.param(lambda k: insertion_curve(k["model"], k["images"], 0, np.concatenate([k["maps"], k["maps"]])),
                 ["(4, 64, 64)", "one H x W map per image"], id="more-maps-than-images"),
    pytest.param(lambda k: deletion_curve(k["model"], k["images"], 0, with_nan(k["maps"])), ["1 NaN or infinite", "map 1"],
                 id="nan-in-maps"),
    pytest.param(lambda k: deletion_curve(k["model"], k["images"], 0, np.full((2, SIZE, SIZE), np.inf)), ["8192 NaN or infinite", "first in map 0"], id="inf-in-maps"),
    pytest.param(lambda k: deletion_curve(k["model"], k["images"], 0, k["maps"], steps=0), ["steps", "got 0"], id="zero-steps"),
    # superpixel labels
    pytest.param(lambda k: superpixel_drops(k["model"], k["images"], 0, k["segments"][:, :32, :32], progress=False),
                 ["(2, 32, 32)", "(2, 3, 64, 64)", "one H x W label map per image"], id="segments-not-matching-image"),
    pytest.param(lambda k: superpixel_drops(k["model"], k["images"], 0, k["segments"][:1], progress=False),
                 ["(1, 64, 64)", "(2, 3, 64, 64)"], id="one-label-map-for-two-films"),
    pytest.param(lambda k: superpixel_drops(k["model"], k["images"], 0, k["segments"] - 1, progress=False),
                 ["non-negative", "min -1"], id="negative-segment-labels"),
    pytest.param(lambda k: superpixel_drops(k["model"], k["images"], 0, k["segments"] * 1.0, progress=False),
                 ["integer labels", "float64"], id="float-segment-labels"),
    pytest.param(lambda k: cumulative_removal(k["model"], k["images"], 0, k["segments"], k["drops"][:, :5]),
                 ["there are drops for 5 labels", "segment labels run 0.."], id="fewer-drops-than-segments"),
    pytest.param(lambda k: segment_table(k["segments"][0], np.full(k["drops"].shape[1], np.nan)),
                 ["film 0", "no finite drop"], id="nan-drop-for-a-present-segment"),
    pytest.param(lambda k: segment_table(k["segments"], k["drops"]), ["one film", "2 label maps"], id="table-of-two-films"),
    pytest.param(lambda k: segment_heatmap(k["segments"], k["drops"][:1]), ["(2, 64, 64)", "(1,"], id="heatmap-drops-for-one-film"),
    pytest.param(lambda k: slic_segments(k["gray"][None]), ["(1, 2, 64, 64)"], id="slic-on-4d-input"),
    pytest.param(lambda k: slic_segments(k["gray"], n_segments=0), ["n_segments", "got 0"], id="slic-zero-segments"),
    pytest.param(lambda k: slic_segments(k["gray"], sigma=-1), ["sigma", "got -1"], id="slic-negative-sigma"),
    pytest.param(lambda k: slic_segments(k["gray"], compactness=-10), ["compactness", "got -10"], id="slic-negative-compactness"),
    # mask sizes and kinds
    pytest.param(lambda k: occlusion_mask((SIZE, SIZE), "centre", 1.5), ["size 1.5", "0 < size < 1"], id="fraction-above-one"),
    pytest.param(lambda k: occlusion_mask((SIZE, SIZE), "centre", -0.25), ["size -0.25"], id="negative-size"),
    pytest.param(lambda k: occlusion_mask((SIZE, SIZE), "ring", 0), ["size 0", "1..64"], id="zero-size"),
    pytest.param(lambda k: occlusion_mask((SIZE, SIZE), "centre", 65), ["size 65", "1..64"], id="square-larger-than-image"),
    pytest.param(lambda k: occlusion_mask((SIZE, SIZE), "centre", 12.5), ["size 12.5"], id="fractional-pixel-count"),
    pytest.param(lambda k: occlusion_mask((SIZE, SIZE), "centre"), ["'centre'", "needs a size"], id="centre-without-size"),
    pytest.param(lambda k: occlusion_mask((SIZE, SIZE), "top-left", 0.5), ["size=0.5", "'top-left'"], id="quadrant-with-size"),
    pytest.param(lambda k: occlusion_mask((SIZE, SIZE), "diamond", 0.5), ["'diamond'", "centre"], id="unknown-mask-kind"),
    pytest.param(lambda k: occlusion_mask((SIZE,), "centre", 0.5), ["(64,)", "(height, width)"], id="mask-shape-not-2d"),
    pytest.param(lambda k: occlusion_drop(k["model"], k["images"], 0, CENTRE[:32]), ["(32, 64)", "(64, 64)"],
                 id="mask-shape-differs-from-image"),
    pytest.param(lambda k: occlusion_drop(k["model"], k["images"], 0, CENTRE.astype(np.uint8)), ["boolean", "uint8"],
                 id="mask-not-boolean"),
    pytest.param(lambda k: occlusion_drop(k["model"], k["images"], 0, np.stack([[CENTRE]] * 3)), ["(3, 1, 64, 64)", "2 images"],
                 id="per-image-masks-for-three-films"),
    pytest.param(lambda k: occlude(k["images"], np.stack([CENTRE] * 3)), ["3 masks for 2 images"], id="occlude-masks-count-differs"),
    pytest.param(lambda k: occlude(k["images"], {"centre": CENTRE, "ring": ~CENTRE}), ["dict of 2 masks", "centre", "occlusion_drop"],
                 id="occlude-given-several-named-masks"),
    # fillers
    pytest.param(lambda k: filler_images(k["images"], "noise"), ["'noise'", "zero", "a number"], id="unknown-filler"),
    pytest.param(lambda k: occlusion_drop(k["model"], k["images"], 0, CENTRE, filler="black"), ["'black'"], id="unknown-filler-in-drop"),
    pytest.param(lambda k: filler_images(k["images"], float("nan")), ["finite", "nan"], id="nan-filler"),
    pytest.param(lambda k: filler_images(k["images"], "blur", sigma=0), ["blur sigma", "got 0"], id="blur-sigma-zero"),
    pytest.param(lambda k: filler_images(k["images"], "blur", sigma=0.6), ["got 0.6"], id="blur-sigma-too-large"),
    # sliding windows
    pytest.param(lambda k: occlusion_map(k["model"], k["images"], 0, window=80), ["window 80", "64 x 64"], id="window-larger-than-image"),
    pytest.param(lambda k: occlusion_map(k["model"], k["images"], 0, window=0), ["window", "got 0"], id="window-zero"),
    pytest.param(lambda k: occlusion_map(k["model"], k["images"], 0, window=16, stride=0), ["stride", "got 0"], id="stride-zero"),
    pytest.param(lambda k: occlusion_map(k["model"], k["images"], 0, window=16, stride=-4), ["stride", "got -4"], id="stride-negative"),
    pytest.param(lambda k: occlusion_map(k["model"], k["images"], 0, window=16, stride=None), ["stride", "None"], id="stride-none"),
    pytest.param(lambda k: occlusion_map(k["model"], k["images"], 0, window=8, stride=12), ["stride 12", "window 8"],
                 id="stride-larger-than-window"),
    # labels, images, batch sizes
    pytest.param(lambda k: occlusion_drop(k["model"], k["images"], "Cardiomegaly", CENTRE), ["'Cardiomegaly'"], id="label-not-in-model"),
    pytest.param(lambda k: superpixel_drops(k["model"], k["images"], 1000, k["segments"], progress=False), ["1000", "1000 outputs"],
                 id="label-index-out-of-range"),
    pytest.param(lambda k: deletion_curve(k["model"], k["images"][0], 0, k["maps"][0]), ["(3, 64, 64)", "N x C x H x W"],
                 id="image-without-batch-axis"),
    pytest.param(lambda k: occlusion_map(k["model"], k["images"][:, :1], 0), ["3-channel", "(2, 1, 64, 64)"], id="one-channel-for-rgb-model"),
    pytest.param(lambda k: occlusion_drop(k["model"], torch.from_numpy(k["gray"])[:, None].expand(-1, 3, -1, -1), 0, CENTRE),
                 ["floats", "torch.uint8"], id="raw-uint8-pixels"),
    pytest.param(lambda k: occlusion_drop(k["model"], k["images"], 0, CENTRE, batch_size=0), ["batch_size", "got 0"], id="batch-size-zero"),
    pytest.param(lambda k: superpixel_drops(k["model"], k["images"], 0, k["segments"], batch_size=-2, progress=False),
                 ["batch_size", "got -2"], id="batch-size-negative"),
    pytest.param(lambda k: deletion_curve(k["model"], k["images"], 0, k["maps"], batch_size=2.5), ["batch_size", "got 2.5"],
                 id="batch-size-fractional"),
    pytest.param(lambda k: occlusion_map(k["model"], k["images"], 0, batch_size=0), ["batch_size", "got 0"], id="occlusion-map-batch-zero"),
    pytest.param(lambda k: random_maps((64, 64)), ["(N, H, W)", "(64, 64)"], id="random-maps-shape-without-count"),
    pytest.param(lambda k: random_maps((2, 64, 64), cells=0), ["cells", "got 0"], id="random-maps-zero-cells"),
]


@pytest.mark.parametrize("call, named", CASES)
def test_refused_naming_the_value(kit, call, named):
    refused(lambda: call(kit), ValueError, *named)
