"""Bad input to `cxr_nb.curation`, PadChest-layout CSVs that are not the shipped one, and the curation study's params."""
import ast
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from cxr_nb.curation import (PADCHEST_EXCLUDE, PatientLeakageError, assert_no_patient_overlap, check_exclusions,
                             chexpert_label_table, grouped_patient_split, hash_patient_split, load_chexpert_csv,
                             load_padchest_csv, select_rare_findings)

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT/"nbs/studies/01_curation.ipynb"
DEMO = ROOT/"params/curation/demo.yaml"


def padchest_like(n_patients=60, seed=0) -> pd.DataFrame:
    "A small table in PadChest's layout (as SynthCXR writes it): 3 findings, laterals, multi-label and blank rows."
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        pid = str(10**37 + 7919 * p)  # PadChest-sized ids: 38 digits
        finding = ["hiatal hernia", "bronchiectasis", "normal"][p % 3]
        for i in range(3):
            rows.append({"ImageID": f"{pid}_{i}.png", "ImageDir": p % 4, "PatientID": pid,
                         "Projection": ["PA", "AP", "L"][i], "Labels": str([f" {finding}" if i else finding])})
    rows += [{"ImageID": "m.png", "ImageDir": 0, "PatientID": "1", "Projection": "PA", "Labels": "['hiatal hernia', 'bronchiectasis']"},
             {"ImageID": "b.png", "ImageDir": 0, "PatientID": "2", "Projection": "PA", "Labels": np.nan},
             {"ImageID": "g.png", "ImageDir": 0, "PatientID": "3", "Projection": "PA", "Labels": "['unterminated"}]
    return pd.DataFrame(rows).sample(frac=1, random_state=int(rng.integers(1000)))


def test_selection_on_a_padchest_layout_csv(tmp_path):
    p = tmp_path/"synth_padchest.csv"
    padchest_like().to_csv(p, index=False)
    df = load_padchest_csv(p)
    assert df["PatientID"].str.len().max() == 38  # read as strings, digits intact
    rf = select_rare_findings(df, exclude={"nondiagnostic": ["normal"]}, min_train=5, min_val=1)
    removed = rf.removed["removed"].to_dict()
    assert removed["frontal projection"] == 60  # the laterals
    assert removed["labelled"] == 2 and removed["single label"] == 1  # blank + garbage; the multi-label image
    assert removed["exclude nondiagnostic"] == 40
    assert set(rf.findings) == {"hiatal hernia", "bronchiectasis"}  # ' hiatal hernia' and 'hiatal hernia' are one finding
    assert rf.table["total"].sum() == len(rf.images) == 80
    assert_no_patient_overlap(rf.images, "PatientID")


def test_missing_column_is_named(tmp_path):
    df = padchest_like()
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['Labels'\]"):
        select_rare_findings(df.drop(columns="Labels"))
    p = tmp_path/"no_patient.csv"
    df.drop(columns="PatientID").to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"no_patient.csv lacks column\(s\) \['PatientID'\]"):
        load_padchest_csv(p)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['patientid'\]"):
        hash_patient_split(df)  # PadChest's column is PatientID: the default patientid is not there
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['Edema'\]"):
        chexpert_label_table(pd.DataFrame({"Frontal/Lateral": ["Frontal"], "Cardiomegaly": [1.0]}), ["Cardiomegaly", "Edema"])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_chexpert_csv(tmp_path/"nope.csv")


def test_exclusion_typo_is_reported():
    df = padchest_like()
    with pytest.raises(ValueError, match=r"'hiatal hernai' in rare \(did you mean 'hiatal hernia'\?\)"):
        select_rare_findings(df, exclude={"rare": ["hiatal hernai"]}, min_train=1, min_val=1)
    with pytest.warns(UserWarning, match="'bronchiectazis'"):
        rf = select_rare_findings(df, exclude=["bronchiectazis", "normal"], unknown_exclusions="warn", min_train=1, min_val=1)
    assert "bronchiectasis" in rf.findings  # the typo excluded nothing, as the warning said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_exclusions(["bronchiectazis"], ["bronchiectasis"], unknown="ignore") == ["bronchiectazis"]
    with pytest.raises(ValueError, match="unknown must be"):
        check_exclusions([], [], unknown="raise")


def test_bad_split_inputs():
    df = padchest_like()
    with pytest.raises(TypeError, match="dtype=\\{'PatientID': str\\}"):
        hash_patient_split(df.assign(PatientID=df["PatientID"].astype(float)), patient_col="PatientID")
    with pytest.raises(ValueError, match=r"1 row\(s\) have no 'PatientID'"):
        grouped_patient_split(df.assign(PatientID=df["PatientID"].where(df["ImageID"] != "m.png")), patient_col="PatientID")
    with pytest.raises(ValueError, match="val_frac must be a number in \\(0, 2/3\\)"):
        hash_patient_split(df, val_frac=0, patient_col="PatientID")
    with pytest.raises(ValueError, match="1 patient\\(s\\) cannot be split"):
        grouped_patient_split(pd.DataFrame({"patientid": ["a", "a"]}))
    with pytest.raises(ValueError, match=r"projection\(s\) \['pa'\] not in the table; it has \['AP', 'L', 'PA'\]"):
        select_rare_findings(df, projections=["pa", "AP_horizontal"])  # AP_horizontal: PadChest's, merely absent here
    with pytest.raises(ValueError, match=r"ImageDir \[7\] not in the table; it has \[0, 1, 2, 3\]"):
        select_rare_findings(df, image_dirs=[0, 7])
    with pytest.raises(ValueError, match="min_val must be a non-negative integer"):
        select_rare_findings(df, min_val=-1)
    bad = pd.DataFrame({"patientid": ["a", "b", "a"], "split": ["train", "val", "test"]})
    with pytest.raises(PatientLeakageError, match=r"1 patient\(s\) in both train and test, e.g. \['a'\]"):
        assert_no_patient_overlap(bad)


def _parameters_cell_defaults(nb_path):
    nb = nbformat.read(str(nb_path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cells[0].source).body}


def test_demo_params_match_notebook_and_library():
    defaults = _parameters_cell_defaults(STUDY)
    spec = yaml.safe_load(DEMO.read_text())
    assert spec["notebook"] == "nbs/studies/01_curation.ipynb" and spec["run"] == "demo"
    assert spec["parameters"] == {k: v for k, v in defaults.items() if k != "out_dir"}
    assert {g: defaults[f"exclude_{g}"] for g in PADCHEST_EXCLUDE} == PADCHEST_EXCLUDE


def test_study_with_misspelt_exclusion_fails_naming_it(tmp_path):
    params = yaml.safe_load(DEMO.read_text())
    params["notebook"] = str(STUDY)
    params["run"] = "typo"
    params["parameters"] = {"exclude_devices": ["pacemaker", "endotracheal tub"], "zips_sweep": []}
    p = tmp_path/"typo.yaml"
    p.write_text(yaml.safe_dump(params))
    env = {**os.environ, "CXR_OUTPUTS": str(tmp_path/"outputs")}
    r = subprocess.run([str(Path(sys.executable).with_name("cxr-nb")), "run", "--quiet", str(p)],
                       capture_output=True, text=True, env=env, timeout=600)
    manifest = json.loads((tmp_path/"outputs/curation/typo/run.json").read_text())
    assert r.returncode != 0 and manifest["status"] == "failed"
    assert "'endotracheal tub' in devices (did you mean 'endotracheal tube'?)" in manifest["error"]
