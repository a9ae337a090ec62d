"""CAMs and explanation scores on the demo stand-in and unseen SynthCXR films: batching, the model left as found,
peft and frozen models, localization beyond chance, the randomisation check and the scores table."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cxr_nb.explain.cams import cam_maps, demo_standin, explain_films, label_index, predict_proba
from cxr_nb.explain.perturb import random_maps
from cxr_nb.explain.scores import energy_share, explanation_scores, pointing_hits, randomization_check
from cxr_nb.models import apply_lora


@pytest.fixture(scope="module")
def model():
    return demo_standin()


@pytest.fixture(scope="module")
def cardio(model):
    films = explain_films(model)
    return films.subset(films.truth["Cardiomegaly"].to_numpy() == 1)


def test_one_batch_gives_each_film_its_own_map(model, cardio):
    "One target per image: a batch's maps equal the maps of each film alone (a shared target zeroes all but the first)."
    batch = cam_maps(model, cardio.images[:4], "Cardiomegaly", batch_size=4)
    alone = np.concatenate([cam_maps(model, cardio.images[i:i + 1], "Cardiomegaly") for i in range(4)])
    np.testing.assert_allclose(batch, alone, atol=1e-4)
    assert (batch.reshape(4, -1).max(1) > 0.99).all()


def test_model_left_as_found(model, cardio):
    trained = copy.deepcopy(model).train()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    cam_maps(trained, cardio.images[:2], "Cardiomegaly", method="gradcam++")
    assert trained.training and all(p.grad is None for p in trained.parameters())
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items() if "running" not in k and "num_batches" not in k)


def test_peft_and_frozen_models_give_the_base_maps(model, cardio):
    base = cam_maps(model, cardio.images[:2], "Cardiomegaly")
    lora = apply_lora(copy.deepcopy(model), r=4)
    np.testing.assert_allclose(cam_maps(lora, cardio.images[:2], "Cardiomegaly"), base, atol=1e-5)
    frozen = copy.deepcopy(model).requires_grad_(False)
    np.testing.assert_allclose(cam_maps(frozen, cardio.images[:2], "Cardiomegaly"), base, atol=1e-5)


def test_the_stand_in_points_at_the_heart_more_often_than_chance(model, cardio):
    mask = cardio.masks["Cardiomegaly"]
    maps = cam_maps(model, cardio.images, "Cardiomegaly", layers="features.denseblock3")
    ours, chance = np.nanmean(pointing_hits(maps, mask)), np.nanmean(pointing_hits(random_maps(mask.shape, seed=1), mask))
    assert ours > chance + 0.3, (ours, chance)
    assert np.nanmean(energy_share(maps, mask)) > mask.mean() * 1.5
    probs = predict_proba(model, cardio.images)[:, label_index(model, "Cardiomegaly")]
    assert probs.mean() > 0.4


def test_randomising_the_model_changes_its_maps(model, cardio):
    check = randomization_check(model, cardio.images[:4], "Cardiomegaly", depth=1)
    assert list(check.reinitialised) == ["head", "head + features.denseblock4"]
    assert (check.rank_correlation < 0.9).all()


def test_scores_table_has_every_metric_with_intervals(model, cardio):
    table = explanation_scores(model, cardio.subset(np.arange(6)), "Cardiomegaly", methods=("gradcam", "random"), steps=4,
                               n_resamples=200)
    for metric in ("pointing", "miou", "energy", "deletion_auc", "insertion_auc"):
        assert (table[f"{metric}_lo"] <= table[metric]).all() and (table[metric] <= table[f"{metric}_hi"]).all()
    assert table.loc["gradcam", "deletion_auc"] < table.loc["random", "deletion_auc"]
