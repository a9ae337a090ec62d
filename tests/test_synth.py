"""SynthCXR layouts read back through torchxrayvision's own dataset classes, checked against the ground truth."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torchxrayvision as xrv

from cxr_nb.labels import CHEXPERT_LABELS, PADCHEST_CSV
from cxr_nb.synth import load_masks, read_truth, write_dataset

N = 90


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return {k: write_dataset(k, d/k, n=N, seed=3, size=64, progress=False) for k in ("chexpert", "nih", "padchest", "pneumonia")}


def test_chexpert_read_by_torchxrayvision(roots):
    root, truth = roots["chexpert"], read_truth(roots["chexpert"])
    for split in ("train", "valid"):
        csv = pd.read_csv(root/f"{split}.csv")
        assert list(csv.columns[:5]) == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
        assert list(csv.columns[5:]) == list(CHEXPERT_LABELS)
        ds = xrv.datasets.CheX_Dataset(str(root), str(root/f"{split}.csv"), views=["PA", "AP"], unique_patients=False)
        frontal = csv[csv["Frontal/Lateral"] == "Frontal"]
        assert len(ds) == len(frontal) == ((truth.split == split) & (truth.view != "L")).sum()
        t = truth.set_index("path").loc[ds.csv.Path.str.replace("CheXpert-v1.0-small/", "", regex=False)]
        i = ds.pathologies.index("Cardiomegaly")
        lab = ds.labels[:, i]
        truth_card = t["Cardiomegaly"].values
        # a written 1 is a true positive, a written 0 a true negative; the train split's -1 become NaN
        assert np.all(truth_card[lab == 1] == 1) and np.all(truth_card[lab == 0] == 0)
        if split == "valid": assert not np.isnan(lab).any() and np.array_equal(lab, truth_card)
        sample = ds[0]
        assert sample["img"].shape == (1, 64, 64) and -1024 <= sample["img"].min() < sample["img"].max() <= 1024
    # patients of the official valid set are not in train
    assert not set(truth[truth.split == "valid"].patient) & set(truth[truth.split == "train"].patient)
    assert (truth.view == "L").any(), "lateral views exist for frontal filters to remove"


NIH_MAP = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural Effusion",
           "Mass": "Mass", "Nodule": "Nodule", "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
           "Consolidation": "Consolidation", "Edema": "Edema", "Emphysema": "Emphysema", "Fibrosis": "Fibrosis",
           "Hernia": "Hiatal Hernia"}


def test_nih_read_by_torchxrayvision_with_masks(roots):
    root, truth = roots["nih"], read_truth(roots["nih"])
    ds = xrv.datasets.NIH_Dataset(str(root/"images"), str(root/"Data_Entry_2017_v2020.csv"), str(root/"BBox_List_2017.csv"),
                                  views=["PA", "AP"], unique_patients=False, pathology_masks=True)
    assert len(ds) == N
    t = truth.assign(name=truth.path.str.split("/").str[1]).set_index("name").loc[ds.csv["Image Index"]]
    for xname, ours in NIH_MAP.items():
        assert np.array_equal(ds.labels[:, ds.pathologies.index(xname)], t[ours].values.astype(np.float32)), xname
    assert ds.csv.has_masks.sum() > 5
    checked = 0
    for idx in np.nonzero(ds.csv.has_masks.values)[0][:10]:
        s = ds[int(idx)]
        name = ds.csv["Image Index"].iloc[idx]
        truth_masks = load_masks(root, f"images/{name}")
        for k, box in s["pathology_masks"].items():
            path = ds.pathologies[k]
            assert s["lab"][k] == 1, f"{name}: a box for {path} without its label"
            ours = NIH_MAP.get(path)
            if ours is None: continue   # Infiltration boxes come from the pneumonia/consolidation mask
            m, b = truth_masks[ours], box[0].astype(bool)
            assert (m & ~b).sum() <= 0.02 * m.sum() + 64, f"{name}: {path} mask outside its box"
            checked += 1
    assert checked > 3


def test_padchest_read_by_torchxrayvision(roots):
    root, truth = roots["padchest"], read_truth(roots["padchest"])
    csv = pd.read_csv(root/PADCHEST_CSV)
    for col in ["ImageID", "ImageDir", "StudyDate_DICOM", "PatientID", "PatientBirth", "PatientSex_DICOM", "Projection",
                "Labels", "Localizations"]:
        assert col in csv.columns, col
    assert csv.ImageID.str.endswith(".png").all() and set(csv.Projection) <= {"PA", "AP", "AP_horizontal", "L"}
    labels = csv.Labels.map(ast.literal_eval)
    assert labels.map(lambda l: isinstance(l, list) and len(l) >= 1).all()
    assert all(l == l.lower() or l in ("COPD signs", "NSG tube") for ls in labels for l in ls)
    ds = xrv.datasets.PC_Dataset(str(root/"images"), str(root/PADCHEST_CSV), views=["PA", "AP", "AP Supine"], unique_patients=False)
    assert len(ds) == csv.Projection.isin(["PA", "AP", "AP_horizontal"]).sum()
    t = truth.assign(name=truth.path.str.split("/").str[1]).set_index("name").loc[ds.csv.ImageID]
    for xname, ours in [("Cardiomegaly", ["Cardiomegaly"]), ("Effusion", ["Pleural Effusion"]), ("Hernia", ["Hiatal Hernia"]),
                        ("Pneumothorax", ["Pneumothorax"]), ("Fracture", ["Fracture", "Callus Rib Fracture"]),
                        ("Emphysema", ["Emphysema"]), ("Bronchiectasis", ["Bronchiectasis"]), ("Mass", ["Mass"])]:
        assert np.array_equal(ds.labels[:, ds.pathologies.index(xname)], t[ours].max(axis=1).values.astype(np.float32)), xname
    s = ds[0]
    assert s["img"].min() >= -1024 and s["img"].max() <= 1024 and s["img"].max() > 500, "16-bit PNGs scaled by 65535"


def test_pneumonia_folder_layout(roots):
    root, truth = roots["pneumonia"], read_truth(roots["pneumonia"])
    files = sorted((root/"chest_xray").rglob("*.jpeg"))
    assert len(files) == N
    pat = {"NORMAL": re.compile(r"^(NORMAL2-)?IM-\d{4}-\d{4}\.jpeg$"), "PNEUMONIA": re.compile(r"^person\d+_(bacteria|virus)_\d+\.jpeg$")}
    for f in files:
        split, cls = f.parts[-3], f.parts[-2]
        assert split in ("train", "val", "test") and pat[cls].match(f.name), f
    counts = pd.Series([f.parts[-3] for f in files]).value_counts()
    assert counts["train"] > counts["test"] > 0 and counts["val"] <= 4
    pneu = truth[truth.path.str.contains("/PNEUMONIA/")]
    assert pneu["Pneumonia"].eq(1).all() and truth[truth.path.str.contains("/NORMAL/")]["No Finding"].eq(1).all()
    assert truth.groupby("patient").size().max() > 1, "several images per patient"


def test_same_seed_same_dataset(tmp_path):
    a = write_dataset("nih", tmp_path/"a", n=12, seed=5, size=48, progress=False)
    b = write_dataset("nih", tmp_path/"b", n=12, seed=5, size=48, progress=False, workers=1)
    assert (a/"Data_Entry_2017_v2020.csv").read_bytes() == (b/"Data_Entry_2017_v2020.csv").read_bytes()
    for f in (a/"images").iterdir():
        assert f.read_bytes() == (b/"images"/f.name).read_bytes()


def test_cli_writes_a_layout(tmp_path):
    cli = Path(sys.executable).with_name("cxr-nb")
    r = subprocess.run([str(cli), "synth", "chexpert", str(tmp_path/"CheXpert-v1.0-small"), "--n", "25", "--size", "48", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "25 images" in r.stdout and (tmp_path/"CheXpert-v1.0-small"/"train.csv").is_file()
    r = subprocess.run([str(cli), "synth", "chexpert", str(tmp_path/"CheXpert-v1.0-small"), "--n", "26", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--overwrite" in r.stderr


def test_rare_finding_curation_selects_from_synthetic_padchest(tmp_path):
    "The PadChest curation run on SynthCXR's PadChest picks the simulator's rare findings, nothing common or descriptive."
    from cxr_nb.curation import PADCHEST_EXCLUDE, load_padchest_csv, select_rare_findings
    root = write_dataset("padchest", tmp_path/"pc", n=3000, seed=0, size=32, progress=False)
    df = load_padchest_csv(root/PADCHEST_CSV)
    labels = df.Labels.map(ast.literal_eval)
    frontal = df.Projection.isin(["PA", "AP", "AP_horizontal"])
    assert 0.25 < (labels[frontal].map(len) > 1).mean() < 0.6, "a large share of multi-label films, as in PadChest"
    # thresholds scaled to 3,000 films (the real study's 15 / 4 needed about 36,000 frontal films)
    res = select_rare_findings(df, exclude=PADCHEST_EXCLUDE, unknown_exclusions="ignore", min_train=6, min_val=2)
    chosen = set(res.table.index)
    assert chosen <= {"hiatal hernia", "callus rib fracture", "bronchiectasis", "pulmonary fibrosis"}, chosen
    assert len(chosen) >= 2 and "hiatal hernia" in chosen
    assert res.removed.loc["single label", "removed"] > 500
