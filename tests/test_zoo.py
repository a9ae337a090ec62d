"""Stand-ins mean transfer: a stand-in head-swapped to CheXpert's labels scores above chance on a matched label of the
CheXpert site before any fine-tuning, where the same architecture from random initialisation does not; and the
`cxr-nb zoo` command line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cxr_nb.core import STAGE_TAG, torch_threads
from cxr_nb.datasets import chexpert_dataset
from cxr_nb.metrics import bootstrap_auroc
from cxr_nb.models import build_model, swap_head
from cxr_nb.preprocess import InputSpec
from cxr_nb.runner import _lock_held   # whether some process holds a lock file (the runner's run locks use the same flock)
from cxr_nb.synth import write_dataset
from cxr_nb.train import evaluate
from cxr_nb.zoo import Recipe, Zoo, check_unseen

MODEL = "densenet121-res224-nih"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    "A small NIH-site stand-in (48 px, 360 films, four epochs): 2.6 min in make test's pytest, its slowest set-up."
    root = tmp_path_factory.mktemp("zoo")
    zoo = Zoo(root, [Recipe(MODEL, images=360, held_out=60, size=48, epochs=4, eval_sites=("nih",))])
    zoo.build(progress=False)
    return zoo


@pytest.fixture(scope="module")
def chexpert_site(tmp_path_factory, zoo):
    "CheXpert-site films of a study population (seed 5), cached at the stand-in's resolution."
    root = write_dataset("chexpert", tmp_path_factory.mktemp("chex")/"CheXpert-v1.0-small", n=240, seed=5, size=48,
                         priors={"Cardiomegaly": .3}, progress=False)
    return root, chexpert_dataset(root, split="all").cached(InputSpec(48, "xrv"), root=zoo.cache_dir, progress=False)


def cardiomegaly_auroc(model, data) -> tuple[float, float, float]:
    "AUROC [95% CI] on Cardiomegaly of `model` head-swapped to the dataset's labels, nothing trained."
    report = swap_head(model, data.pathologies)
    assert report.set_index("label").loc["Cardiomegaly", "init"] == "copied"
    preds = evaluate(model, data)
    j = preds.names.index("Cardiomegaly")
    row = bootstrap_auroc(preds.labels[:, [j]], preds.scores[:, [j]], ["Cardiomegaly"],
                          data.csv.patientid.to_numpy()[preds.ids], n_resamples=500).loc["Cardiomegaly"]
    return row.auroc, row.lo, row.hi


def test_standin_transfers_to_the_chexpert_site_before_fine_tuning(zoo, chexpert_site):
    standin = build_model(MODEL, weights="auto", zoo=zoo)
    assert standin.weights.source == "standin"
    root, films = chexpert_site
    assert check_unseen(standin, root).seed.tolist() == [5]      # another population: nothing refused
    auroc, lo, _ = cardiomegaly_auroc(standin, films)
    assert auroc > 0.65 and lo > 0.55, (auroc, lo)      # SynthCXR 2 at 48 px: 0.71 [0.65, ...] (SynthCXR 1: over 0.8)


def test_random_initialisation_does_not(zoo, chexpert_site):
    "The same architecture and head swap from random initialisation: a random projection of random features, not a score."
    import torch
    torch.manual_seed(0)
    random_init = build_model(MODEL, weights="none")
    auroc, lo, hi = cardiomegaly_auroc(random_init, chexpert_site[1])
    assert lo < 0.5, (auroc, lo, hi)      # no evidence of scoring above chance (a random head may even rank backwards)


def cli(*args):
    return subprocess.run([str(Path(sys.executable).with_name("cxr-nb")), "zoo", *args], capture_output=True, text=True, timeout=120)


def test_zoo_list_and_build_on_the_command_line(tmp_path):
    done = cli("list", "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in ("densenet121-res224-nih", "densenet121-res224-all", "clip-vit-b32"):
        assert name in done.stdout
    bad = cli("build", "resnet50", "--root", str(tmp_path))
    assert bad.returncode == 2 and "no stand-in recipe for ['resnet50']" in bad.stderr, bad.stderr
    assert not any(tmp_path.iterdir())                       # nothing half-built


BUILD = """
import json, sys
from cxr_nb.zoo import Recipe, Zoo, build_standin
recipe = Recipe(sys.argv[2], images=64, held_out=40, size=32, epochs=1)
print(json.dumps(build_standin(recipe, Zoo(sys.argv[1], [recipe]), progress=True)["built"]))
"""


def test_a_second_process_building_the_same_stand_in_waits_for_the_first(tmp_path):
    "Two processes, one recipe: the second waits on the build lock and returns the first one's card (one build, not two)."
    import time
    recipe = Recipe(MODEL, images=64, held_out=40, size=32, epochs=1)
    lock = Zoo(tmp_path, [recipe]).folder(recipe).parent/f".{recipe.key}.lock"
    run = lambda: subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path), MODEL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run()
    deadline = time.monotonic() + 120
    while not _lock_held(lock):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = run()
    (out1, err1), (out2, err2) = first.communicate(timeout=300), second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (err1[-2000:], err2[-2000:])
    assert out1 == out2                                                      # the same card: built once
    assert "another process is building" in err2 and "waiting for it to finish" in err2, err2[-2000:]
    assert "another process is building" not in err1
    assert not [p.name for p in (tmp_path/MODEL).iterdir() if STAGE_TAG in p.name]            # no second build left behind


def test_a_stand_in_trains_with_build_threads_whatever_the_callers_pool(tmp_path, monkeypatch):
    "The thread count orders a training run's sums, so a build trains with BUILD_THREADS, and gives the caller its own pool back."
    import torch
    import cxr_nb.zoo as zoo_module
    seen, real_fit = [], zoo_module.fit
    def recording_fit(*args, **kwargs):
        seen.append(torch.get_num_threads()); return real_fit(*args, **kwargs)
    monkeypatch.setattr(zoo_module, "fit", recording_fit)
    recipe = Recipe(MODEL, images=64, held_out=40, size=32, epochs=1, eval_sites=("nih",))
    with torch_threads(1):
        Zoo(tmp_path, [recipe]).build(progress=False)
        assert seen == [zoo_module.BUILD_THREADS] and torch.get_num_threads() == 1
