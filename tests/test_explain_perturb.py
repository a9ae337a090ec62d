"""Perturbation attribution on real SynthCXR films through a real (tiny, random) ResNet: the batched procedures cost the
forward passes they claim (counted with a forward hook) and give the same drops as the source notebook's one-by-one loop;
masks have the geometry they claim; deletion / insertion curves start and end where they must; the model is left as it
was found. The trained stand-in's lessons live in nbs/13_explain_perturb.ipynb."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxr_nb.explain.perturb import (MASK_KINDS, PerturbationCurve, cumulative_removal, deletion_curve, fast_inference,
                                    filler_images, insertion_curve,
                                    occlude, occlusion_drop, occlusion_map, occlusion_mask, occlusion_masks, pixel_ranks,
                                    random_maps, segment_heatmap, segment_table, slic_segments, superpixel_drops,
                                    superpixel_drops_reference)
from cxr_nb.models import build_model, first_conv
from cxr_nb.preprocess import normalize
from cxr_nb.synth import render_study

SIZE = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny-resnet", weights="none").eval()


@pytest.fixture(scope="module")
def films():
    "Three frontal SynthCXR films at 64 px: grey uint8 and normalised for an ImageNet model."
    gray = np.stack([render_study(7, p, size=SIZE, view="PA").image for p in (1, 2, 3)])
    return gray, normalize(torch.from_numpy(gray)[:, None], "imagenet")


@pytest.fixture(scope="module")
def segments(films):
    return slic_segments(films[0], n_segments=30)


def probability(model, images, index=0):
    "The target's probability by a plain forward pass, nothing batched or reordered."
    with torch.no_grad():
        return torch.sigmoid(model(images))[:, index].double().numpy()


class PassCounter:
    """Counts forward passes of a model and their batch sizes with a forward hook on its head, which runs once a pass (also in
    the batch-norm-folded copy that fast_inference runs: the copy keeps the head's hooks); removed on exit."""
    def __init__(self, model): self.model, self.sizes = model, []
    def __enter__(self):
        self.hook = self.model.head.register_forward_hook(lambda module, inputs, output: self.sizes.append(len(inputs[0])))
        return self
    def __exit__(self, *exc): self.hook.remove()


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_superpixels_cost_one_plus_ceil_k_over_b_passes(model, films, segments, batch_size):
    _, images = films
    with PassCounter(model) as counter:
        drops = superpixel_drops(model, images[:2], 0, segments[:2], batch_size=batch_size, progress=False)
    K = segments[:2].reshape(2, -1).max(1) + 1
    assert len(counter.sizes) == sum(1 + math.ceil(k / batch_size) for k in K)
    assert max(counter.sizes) <= batch_size and counter.sizes.count(1) >= 2             # one unoccluded pass per film
    assert np.isfinite(drops[0, :K[0]]).all() and np.nanmax(np.abs(drops)) > 0


@pytest.mark.parametrize("filler", ["zero", "mean", "blur"])
def test_batched_drops_equal_the_source_procedure(model, films, filler):
    gray, images = films
    coarse = slic_segments(gray[0], n_segments=12)                     # the source's loop is slow: 2 passes per segment
    batched = superpixel_drops(model, images[:1], 0, coarse, filler=filler, batch_size=4, progress=False)[0]
    with PassCounter(model) as counter:
        reference = superpixel_drops_reference(model, images[:1], 0, coarse, filler=filler)
    assert len(counter.sizes) == 2 * len(reference) and set(counter.sizes) == {1}          # the source: 2K passes at batch 1
    np.testing.assert_allclose(batched, reference, rtol=1e-4, atol=1e-7)
    assert np.abs(reference).max() > 1e-4                                                  # not an empty comparison


def test_occlusion_drop_is_probability_minus_occluded_probability(model, films):
    _, images = films
    masks = occlusion_masks((SIZE, SIZE))
    with PassCounter(model) as counter:
        drops = occlusion_drop(model, images, 0, masks, filler="mean", batch_size=4)
    n, m = len(images), len(masks)
    assert drops.shape == (n, m)
    assert len(counter.sizes) == math.ceil(n * (1 + m) / 4)        # the unoccluded ones once, in the same stream as the rest
    for j, mask in enumerate(masks.values()):
        expected = probability(model, images) - probability(model, occlude(images, mask, "mean"))
        np.testing.assert_allclose(drops[:, j], expected, atol=1e-5)


def test_per_image_masks(model, films):
    _, images = films
    pairs = np.zeros((len(images), 2, SIZE, SIZE), bool)
    pairs[0, 0, :10], pairs[1, 1, -10:] = True, True                      # different masks for different films
    drops = occlusion_drop(model, images, 0, pairs)
    np.testing.assert_allclose(drops[:, 0], probability(model, images) - probability(model, occlude(images, pairs[:, 0])), atol=1e-5)
    assert drops[2, 0] == pytest.approx(0, abs=1e-6) and drops[2, 1] == pytest.approx(0, abs=1e-6)   # film 2: nothing hidden


def test_mask_geometry():
    for shape in [(64, 64), (63, 50), (7, 9)]:
        quadrants = np.stack([occlusion_mask(shape, kind) for kind in MASK_KINDS[2:]])
        assert (quadrants.sum(0) == 1).all()                                             # they tile the image
        centre = occlusion_mask(shape, "centre", 0.5)
        side = round(0.5 * min(shape))
        rows, cols = np.nonzero(centre)
        assert centre.sum() == side * side and rows.max() - rows.min() == side - 1 == cols.max() - cols.min()
        assert abs((rows.min() + rows.max()) / 2 - (shape[0] - 1) / 2) <= 0.5             # centred
        assert abs((cols.min() + cols.max()) / 2 - (shape[1] - 1) / 2) <= 0.5
        assert (occlusion_mask(shape, "ring", 0.5) == ~centre).all()
    assert occlusion_mask((64, 64), "centre", 16).sum() == 256 and occlusion_mask((64, 64), "centre", 64).all()
    assert occlusion_mask((64, 64), "top-left")[:32, :32].all() and not occlusion_mask((64, 64), "top-left")[32:, :].any()


def test_fillers(films):
    _, images = films
    assert filler_images(images, "zero").abs().max() == 0
    mean = filler_images(images, "mean")
    torch.testing.assert_close(mean[:, :, 5, 7], images.mean(dim=(2, 3)))                # per image and channel
    blur = filler_images(images, "blur")
    assert blur.std() < images.std() and abs(float(blur.mean() - images.mean())) < 0.05
    assert filler_images(images, 0.25).unique().tolist() == [0.25]
    occluded = occlude(images, occlusion_mask((SIZE, SIZE), "centre", 0.5), "blur")
    centre = torch.from_numpy(occlusion_mask((SIZE, SIZE), "centre", 0.5))
    torch.testing.assert_close(occluded[..., centre], blur[..., centre])
    torch.testing.assert_close(occluded[..., ~centre], images[..., ~centre])


def test_deletion_and_insertion_endpoints(model, films):
    _, images = films
    maps = random_maps((len(images), SIZE, SIZE), seed=3)
    deletion = deletion_curve(model, images, 0, maps, steps=4, filler="zero")
    insertion = insertion_curve(model, images, 0, maps, steps=4, filler="blur")
    np.testing.assert_allclose(deletion.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(deletion.probabilities[:, 0], probability(model, images), atol=1e-5)
    np.testing.assert_allclose(deletion.probabilities[:, -1], probability(model, filler_images(images, "zero")), atol=1e-5)
    np.testing.assert_allclose(insertion.probabilities[:, 0], probability(model, filler_images(images, "blur")), atol=1e-5)
    np.testing.assert_allclose(insertion.probabilities[:, -1], probability(model, images), atol=1e-5)
    flat_then_gone = PerturbationCurve("deletion", np.array([0, 0.5, 1]), np.array([[1.0, 1.0, 0.0], [0.8, 0.2, 0.2]]))
    np.testing.assert_allclose(flat_then_gone.auc, [0.75, 0.35])                             # trapezoids, by hand
    # a curve depends on the map's ranking only: a monotone transform of the map gives the same curve
    same = deletion_curve(model, images, 0, maps ** 3 * 10 + 5, steps=4, filler="zero")
    np.testing.assert_allclose(same.probabilities, deletion.probabilities)


def test_deletion_deletes_the_top_of_the_map_first(model, films):
    _, images = films
    half = np.zeros((len(images), SIZE, SIZE))
    half[:, :, :SIZE // 2] = 1                                                           # the left half ranks first
    curve = deletion_curve(model, images, 0, half, steps=2, filler=-2.0)
    left = np.zeros((SIZE, SIZE), bool); left[:, :SIZE // 2] = True
    np.testing.assert_allclose(curve.probabilities[:, 1], probability(model, occlude(images, left, -2.0)), atol=1e-5)


def test_pixel_ranks_break_ties_at_random():
    flat = np.zeros((1, 8, 8))
    a, b = pixel_ranks(flat, seed=0), pixel_ranks(flat, seed=1)
    assert sorted(a.ravel()) == list(range(64)) and not np.array_equal(a, b)
    assert not np.array_equal(a.ravel(), np.arange(64))                                  # not raster order
    assert (pixel_ranks(np.arange(64.).reshape(1, 8, 8))[0].ravel() == np.arange(63, -1, -1)).all()


def test_random_maps():
    maps = random_maps((2, 40, 30), seed=5)
    assert maps.shape == (2, 40, 30) and maps.dtype == np.float32 and maps.min() == 0 and maps.max() == 1
    np.testing.assert_array_equal(maps, random_maps((2, 40, 30), seed=5))
    assert not np.array_equal(maps, random_maps((2, 40, 30), seed=6))
    smooth, noisy = random_maps((1, 64, 64), cells=7), random_maps((1, 64, 64), cells=None)
    assert np.abs(np.diff(smooth, axis=2)).mean() < 0.2 * np.abs(np.diff(noisy, axis=2)).mean()


def test_slic_labels_run_from_zero_and_follow_the_film(films):
    gray, _ = films
    segments = slic_segments(gray, n_segments=30)
    assert segments.shape == gray.shape
    for s in segments: assert np.array_equal(np.unique(s), np.arange(s.max() + 1))
    np.testing.assert_array_equal(slic_segments(gray[1], n_segments=30), segments[1])


def test_segment_table_heatmap_and_cumulative_removal(model, films, segments):
    _, images = films
    drops = superpixel_drops(model, images[:2], 0, segments[:2], batch_size=16, progress=False)
    table = segment_table(segments[0], drops[0])
    K = segments[0].max() + 1
    assert len(table) == K and table["drop"].is_monotonic_decreasing and table.area_pct.sum() == pytest.approx(100)
    np.testing.assert_allclose(table.abs_drop, table["drop"].abs())
    np.testing.assert_allclose(table.drop_per_1pct_area * table.area_pct, table["drop"])
    heat = segment_heatmap(segments[0], drops[0], clip_negative=False)
    for row in table.itertuples(): assert (heat[segments[0] == row.segment] == np.float32(row.drop)).all()
    assert segment_heatmap(segments[0], drops[0]).min() >= 0
    assert segment_heatmap(segments[:2], drops).shape == (2, SIZE, SIZE)
    removal = cumulative_removal(model, images[:2], 0, segments[:2], drops, filler="zero", batch_size=16)
    np.testing.assert_allclose(removal[:, 0], probability(model, images[:2]), atol=1e-5)
    np.testing.assert_allclose(removal[0, K], probability(model, filler_images(images[:1], "zero")), atol=1e-5)
    # one step: the least important superpixel alone filled
    least = segments[0] == table.segment.iloc[-1]
    np.testing.assert_allclose(removal[0, 1], probability(model, occlude(images[:1], least)), atol=1e-5)


def test_occlusion_map_windows_and_passes(model, films):
    _, images = films
    with PassCounter(model) as counter:
        heat = occlusion_map(model, images[:1], 0, window=16, stride=16, batch_size=5)
    assert heat.shape == (1, SIZE, SIZE) and len(counter.sizes) == 1 + math.ceil(16 / 5)   # 4 x 4 windows
    corner = np.zeros((SIZE, SIZE), bool)
    corner[:16, :16] = True
    expected = probability(model, images[:1]) - probability(model, occlude(images[:1], corner))
    np.testing.assert_allclose(heat[0, :16, :16], expected[0], atol=1e-5)


def test_the_model_is_left_as_found(films, segments):
    _, images = films
    torch.manual_seed(0)
    model = build_model("tiny-resnet", weights="none").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    superpixel_drops(model, images[:1], 0, segments[:1], progress=False)
    deletion_curve(model, images[:1], 0, random_maps((1, SIZE, SIZE)), steps=2)
    assert model.training and first_conv(model)[2].weight.is_contiguous()
    for k, v in model.state_dict().items(): assert torch.equal(v, before[k]), k                # BN statistics untouched
    assert all(p.grad is None for p in model.parameters())


def test_a_peft_wrapped_model_gives_its_base_models_drops(films):
    "LoRA adapters start as the identity (B = 0): through the peft wrapper the drops are the base model's."
    from cxr_nb.models import apply_lora
    _, images = films
    torch.manual_seed(0)
    base = build_model("tiny-resnet", weights="none").eval()
    masks = {kind: occlusion_mask((SIZE, SIZE), kind) for kind in MASK_KINDS[2:]}
    expected = occlusion_drop(base, images, "imagenet_3", masks)
    wrapped = apply_lora(base, r=4, alpha=8)
    wrapped.train()
    np.testing.assert_allclose(occlusion_drop(wrapped, images, "imagenet_3", masks), expected, atol=1e-6)
    assert wrapped.training                                                              # its mode restored


def test_fast_inference_runs_a_folded_copy_and_leaves_the_model_as_found(films):
    _, images = films
    torch.manual_seed(0)
    model = build_model("tiny-resnet", weights="none").train()
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad(): expected = model.eval()(images)
    model.train()
    with fast_inference(model) as runner:
        assert runner is not model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in runner.modules())   # all folded
        assert torch.is_inference_mode_enabled()
        torch.testing.assert_close(runner(images.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4, rtol=1e-4)
    assert model.training and sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == norms
    assert first_conv(model)[2].weight.is_contiguous()
    with fast_inference(model, fold_batchnorm=False) as runner:
        assert runner is model and not model.training
    assert model.training and first_conv(model)[2].weight.is_contiguous()


def test_a_channels_last_model_stays_channels_last(films):
    "The caller's memory layout is theirs: only the folded copy is switched (a 1-channel stem cannot tell layouts apart)."
    _, images = films
    model = build_model("tiny-xrv-densenet", weights="none").to(memory_format=torch.channels_last)
    layout = {n: p.is_contiguous(memory_format=torch.channels_last) for n, p in model.named_parameters() if p.ndim == 4}
    x = normalize(torch.rand(2, 1, SIZE, SIZE), model.input.norm)
    occlusion_drop(model, x, 0, occlusion_mask((SIZE, SIZE), "centre", 0.5))
    assert layout == {n: p.is_contiguous(memory_format=torch.channels_last) for n, p in model.named_parameters() if p.ndim == 4}
    assert any(layout.values())
