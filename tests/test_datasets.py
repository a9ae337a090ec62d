"""Dataset adapters: real shipped metadata with a partial image folder, worker DataLoaders, bad layouts."""

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from cxr_nb.core import seed_worker, seeded_generator
from cxr_nb.labels import SHIPPED_CSV, xrv_data_file
from cxr_nb.datasets import ShippedLabelsWarning, chexpert_dataset, nih_dataset, pneumonia_dataset, synth_dataset
from cxr_nb.preprocess import Preprocess
from cxr_nb.synth import render_study, write_dataset


def test_nih_with_shipped_metadata_and_a_partial_download(tmp_path):
    "A user with a few NIH images and no CSV gets torchxrayvision's shipped labels for exactly those images."
    real = pd.read_csv(xrv_data_file(SHIPPED_CSV["nih"]), nrows=400)
    pick = real[real["View Position"] == "PA"].iloc[[0, 1, 7]]
    (tmp_path/"images").mkdir()
    for i, name in enumerate(pick["Image Index"]):
        cv2.imwrite(str(tmp_path/"images"/name), render_study(0, i + 1, size=64).image)
    with pytest.raises(FileNotFoundError, match="missing or unreadable"), pytest.warns(ShippedLabelsWarning, match="the copy torchxrayvision ships"):
        nih_dataset(tmp_path, views=("PA",))
    with pytest.warns(ShippedLabelsWarning):
        ds = nih_dataset(tmp_path, views=("PA",), on_missing="skip")
    assert len(ds) == 3 and len(ds.skipped) > 100
    assert list(ds.csv["Image Index"]) == list(pick["Image Index"])
    for row, lab in zip(pick.itertuples(), ds.labels):
        want = {p for p in ds.pathologies if p in row[2].split("|")}
        assert {p for p, v in zip(ds.pathologies, lab) if v == 1} == want
    assert ds[0]["img"].shape == (1, 64, 64)


def test_worker_dataloader_is_reproducible(tmp_path):
    root = write_dataset("chexpert", tmp_path/"chex", n=40, seed=2, size=64, progress=False)
    ds = chexpert_dataset(root, "train", preprocess=Preprocess(size=32))
    def epoch():
        dl = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, worker_init_fn=seed_worker,
                                         generator=seeded_generator(5))
        return torch.cat([b["idx"] for b in dl]), torch.cat([b["img"] for b in dl])
    (i1, x1), (i2, x2) = epoch(), epoch()
    assert torch.equal(i1, i2) and torch.equal(x1, x2) and sorted(i1.tolist()) == list(range(len(ds)))


def test_synth_masks_survive_cropping(tmp_path):
    "With a dark-frame crop the masks move with the image: the effusion mask stays in the lower half of the lungs."
    root = write_dataset("padchest", tmp_path/"pc", n=60, seed=4, size=128, progress=False)
    ds = synth_dataset(root, preprocess=Preprocess(size=96, crop=True))
    k = ds.pathologies.index("Pleural Effusion")
    rows = np.nonzero(ds.labels[:, k])[0]
    assert len(rows)
    for i in rows[:3]:
        m = ds[int(i)]["masks"][k]
        ys = torch.nonzero(m)[:, 0].float()
        assert m.any() and ys.mean() > 96 * 0.45


def test_bad_layouts_name_what_is_missing(tmp_path):
    root = write_dataset("chexpert", tmp_path/"chex", n=20, size=48, progress=False)
    (root/"valid.csv").unlink()
    with pytest.raises(FileNotFoundError, match="valid.csv"):
        chexpert_dataset(root, "test")
    csv = pd.read_csv(root/"train.csv").drop(columns=["Pneumothorax"])
    csv.to_csv(root/"train.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['Pneumothorax'\]"):
        chexpert_dataset(root, "train")
    (tmp_path/"p"/"chest_xray").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no split folder"):
        pneumonia_dataset(tmp_path/"p")
