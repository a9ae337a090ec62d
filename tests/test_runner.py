"""End-to-end tests of the `cxr-nb` runner: real console script, real papermill, real notebooks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cxr_nb.runner import execute, load_spec, stale_standins
from cxr_nb.zoo import RECIPES, STANDIN_NOT_BUILT

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cxr-nb")


def cxr_nb(*args, outputs, check=False):
    "Run the installed console script with runs going to `outputs`."
    env = {**os.environ, "CXR_OUTPUTS": str(outputs)}
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, env=env, check=check, timeout=600)


def toy_study(folder: Path, body: str = "") -> Path:
    "A study notebook with one parameters cell (out_dir, n, fail) that writes metrics.json then maybe fails."
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('out_dir = ""\nn = 1\nfail = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params,
                nbformat.v4.new_code_cell("import json, pathlib, os\nout = pathlib.Path(out_dir)\n"
                                          "(out/'metrics.json').write_text(json.dumps({'n': n, 'cwd': os.getcwd()}))"),
                nbformat.v4.new_code_cell("if fail: raise RuntimeError(f'study failed on purpose, n={n}')"),
                nbformat.v4.new_code_cell(body or "(out/'done.txt').write_text('ok')")]
    path = folder/"07_toy.ipynb"
    nbformat.write(nb, path)
    return path


def write_params(path: Path, notebook: Path, **parameters) -> Path:
    lines = [f"notebook: {notebook}", "parameters:" if parameters else ""]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in parameters.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def study(tmp_path):
    nb = toy_study(tmp_path)
    return nb, tmp_path/"outputs"


def test_environment_study_runs_through_cli(tmp_path):
    out = tmp_path/"outputs"
    r = cxr_nb("run", "--quiet", ROOT/"params/environment/demo.yaml", outputs=out)
    assert r.returncode == 0, r.stderr
    run = out/"environment"/"demo"
    manifest = json.loads((run/"run.json").read_text())
    assert manifest["status"] == "completed" and manifest["error"] is None
    assert manifest["params"] == {"bench_batch": 8, "bench_batches": 3}
    assert manifest["versions"]["torch"] and manifest["host"]["cpu_count"] >= 1
    assert manifest["start"] <= manifest["end"] and manifest["duration_s"] > 0
    metrics = json.loads((run/"metrics.json").read_text())
    assert metrics["inference"]["batch"] == 8 and metrics["inference"]["images_per_s"] > 0
    assert "SynthCXR" in metrics["datasets"] and len(metrics["weight_files"]) == 10
    assert metrics["weights_auto"]["resnet50"]["weights_source"] == "none"      # offline: ImageNet models start random
    nih = metrics["weights"]["densenet121-res224-nih"]                            # records in weights_record's words...
    assert nih["weights_source"] in ("published", "standin", STANDIN_NOT_BUILT)
    assert metrics["weights_auto"]["densenet121-res224-nih"]["key"] == nih.get("standin", {}).get("key", "")
    assert manifest["weights"] == metrics["weights"] and stale_standins(run) == []  # ...that the runner checks for a rebuilt zoo
    executed = nbformat.read(run/"00_environment.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and f"out_dir = \"{run}\"" in injected[0].source


def test_weights_source_of_each_model_lands_in_metrics_and_run_json(tmp_path):
    body = ("from cxr_nb.core import RunFolder\nfrom cxr_nb.models import build_model, weights_record\n"
            "run = RunFolder(out_dir)\nrun.record_weights('baseline', weights_record(build_model('tiny-xrv-densenet', weights='none')))\n"
            "run.write_metrics(n=n)")
    nb = toy_study(tmp_path, body)
    r = cxr_nb("run", "--quiet", write_params(tmp_path/"w.yaml", nb, n=2), outputs=tmp_path/"outputs")
    assert r.returncode == 0, r.stderr
    run = tmp_path/"outputs"/"toy"/"w"
    for f in ("metrics.json", "run.json"):
        weights = json.loads((run/f).read_text())["weights"]
        assert weights["baseline"]["weights_source"] == "none" and weights["baseline"]["model"] == "tiny-xrv-densenet", f


def test_a_run_reading_a_backbone_written_again_since_is_rerun(tmp_path):
    "The few-shot study and the ResNet tutorial read the pretraining study's backbones: a new backbone makes their runs stale."
    backbone = tmp_path/"pretraining"/"backbones"/"densenet121-pretext"/"weights.safetensors"
    backbone.parent.mkdir(parents=True); backbone.write_bytes(b"first pretraining")
    body = ("from cxr_nb.core import RunFolder\nrun = RunFolder(out_dir)\n"
            f"run.record_weights('in-domain', {{'model': 'densenet121', 'weights_source': 'in-domain', 'path': {str(backbone)!r}}})\n"
            "run.write_metrics(n=n)")
    p, out = write_params(tmp_path/"reader.yaml", toy_study(tmp_path, body), n=1), tmp_path/"outputs"
    assert cxr_nb("run", "--quiet", p, outputs=out).returncode == 0
    first = json.loads((out/"toy"/"reader"/"run.json").read_text())
    assert first["weights"]["in-domain"]["path"] == str(backbone)
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" in r.stdout
    backbone.write_bytes(b"pretraining run again"); later = first["duration_s"] + 10
    os.utime(backbone, (backbone.stat().st_atime + later, backbone.stat().st_mtime + later))
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" not in r.stdout
    assert f"in-domain: {backbone} was written again" in r.stdout and "running it again" in r.stdout
    assert json.loads((out/"toy"/"reader"/"run.json").read_text())["start"] >= first["start"]
    backbone.unlink()
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and f"in-domain: {backbone} is gone" in r.stdout


def test_a_run_that_wrote_its_own_backbone_is_not_rerun(tmp_path):
    "The pretraining study writes its backbones into its own folder during the run: a second run of it skips, as every other."
    body = ("import time\nfrom cxr_nb.core import RunFolder\nrun = RunFolder(out_dir)\ntime.sleep(1.2)   # past the start's second\n"
            "b = out/'backbones'/'densenet121-pretext'/'weights.safetensors'; b.parent.mkdir(parents=True); b.write_bytes(b'pretrained')\n"
            "run.record_weights('DenseNet pretext', {'model': 'densenet121', 'weights_source': 'in-domain', 'path': str(b)})\n"
            "run.write_metrics(n=n)")
    p, out = write_params(tmp_path/"writer.yaml", toy_study(tmp_path, body), n=1), tmp_path/"outputs"
    assert cxr_nb("run", "--quiet", p, outputs=out).returncode == 0
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" in r.stdout and "written again" not in r.stdout, r.stdout


def test_a_run_that_found_a_stand_in_not_built_is_rerun_once_it_is_built(tmp_path, monkeypatch):
    "The environment study records weights='auto' for every model: a stand-in missing then and built since makes the run stale."
    nih, data = "densenet121-res224-nih", tmp_path/"data"
    key, zoo = RECIPES[nih].key, data/"zoo"
    monkeypatch.setenv("CXR_DATA_ROOT", str(data))                            # the default zoo: empty, in this test's folder
    body = ("from cxr_nb.core import RunFolder\nrun = RunFolder(out_dir)\n"
            f"run.record_weights({nih!r}, {{'model': {nih!r}, 'weights_source': {STANDIN_NOT_BUILT!r}, 'path': None, 'zoo': {str(zoo)!r}}})\n"
            "run.write_metrics(n=n)")
    p, out = write_params(tmp_path/"env.yaml", toy_study(tmp_path, body), n=1), tmp_path/"outputs"
    assert cxr_nb("run", "--quiet", p, outputs=out).returncode == 0
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" in r.stdout                           # still not built: nothing to redo
    (zoo/nih/key).mkdir(parents=True); (zoo/nih/key/"card.json").write_text(json.dumps({"key": key}))
    assert stale_standins(out/"toy"/"env") == [f"{nih} not built -> {key}"]
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" not in r.stdout
    assert f"{nih} not built -> {key}" in r.stdout and "running it again" in r.stdout


def test_run_skip_and_force(study):
    nb, out = study
    p = write_params(nb.parent/"a.yaml", nb, n=4)
    assert cxr_nb("run", "--quiet", p, outputs=out).returncode == 0
    first = json.loads((out/"toy"/"a"/"run.json").read_text())
    assert first["status"] == "completed"
    assert json.loads((out/"toy"/"a"/"metrics.json").read_text())["n"] == 4
    assert json.loads((out/"toy"/"a"/"metrics.json").read_text())["cwd"] == str(nb.parent)

    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" in r.stdout
    assert json.loads((out/"toy"/"a"/"run.json").read_text())["start"] == first["start"]

    (out/"toy"/"a"/"stale.png").write_text("from an older run")
    r = cxr_nb("run", "--quiet", "--force", p, outputs=out)
    assert r.returncode == 0, r.stderr
    forced = json.loads((out/"toy"/"a"/"run.json").read_text())
    assert forced["status"] == "completed" and forced["start"] >= first["start"]
    assert not (out/"toy"/"a"/"stale.png").exists(), "a forced rerun starts from an empty folder"
    assert forced["artifacts"] == ["07_toy.ipynb", "done.txt", "metrics.json"]


def test_changed_parameters_rerun(study):
    nb, out = study
    p = write_params(nb.parent/"a.yaml", nb, n=1)
    assert cxr_nb("run", "--quiet", p, outputs=out).returncode == 0
    write_params(p, nb, n=2)
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" not in r.stdout
    assert json.loads((out/"toy"/"a"/"metrics.json").read_text())["n"] == 2


def test_unknown_parameter_stops_everything(study):
    nb, out = study
    good = write_params(nb.parent/"good.yaml", nb, n=3)
    typo = write_params(nb.parent/"typo.yaml", nb, nn=3)
    r = cxr_nb("run", good, typo, outputs=out)
    assert r.returncode == 2
    assert "'nn' (did you mean 'n'?)" in r.stderr and "valid parameters: fail, n" in r.stderr
    assert not out.exists(), "nothing may run when any params file is invalid"


def test_out_dir_is_reserved(study):
    nb, out = study
    p = write_params(nb.parent/"bad.yaml", nb, out_dir="/tmp/elsewhere")
    r = cxr_nb("run", p, outputs=out)
    assert r.returncode == 2 and "set by the runner" in r.stderr


def test_failing_notebook_recorded_with_partial_output(study):
    nb, out = study
    p = write_params(nb.parent/"f.yaml", nb, fail=True, n=9)
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 1
    run = out/"toy"/"f"
    m = json.loads((run/"run.json").read_text())
    assert m["status"] == "failed" and "RuntimeError: study failed on purpose, n=9" in m["error"]
    assert json.loads((run/"metrics.json").read_text())["n"] == 9, "cells before the failure ran"
    assert not (run/"done.txt").exists(), "cells after the failure did not"
    executed = nbformat.read(run/"07_toy.ipynb", as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "RuntimeError"
    # a failed run is not complete: the next run retries it (and succeeds once fixed)
    write_params(p, nb, fail=False, n=9)
    assert cxr_nb("run", "--quiet", p, outputs=out).returncode == 0
    assert json.loads((run/"run.json").read_text())["status"] == "completed"


def test_interrupted_run_is_not_complete(study):
    "A run.json left at 'running' (process killed) is rerun, not skipped."
    nb, out = study
    p = write_params(nb.parent/"a.yaml", nb)
    spec = load_spec(p)
    m = execute(spec, out, progress=False)
    m.status = "running"
    m.save(out/"toy"/"a"/"run.json")
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" not in r.stdout


def test_dry_run_runs_nothing(study):
    nb, out = study
    p = write_params(nb.parent/"a.yaml", nb, n=2)
    r = cxr_nb("run", "--dry-run", p, outputs=out)
    assert r.returncode == 0 and "would run" in r.stdout and "{'n': 2}" in r.stdout
    assert not out.exists()


def test_bad_params_files(tmp_path, study):
    nb, out = study
    r = cxr_nb("run", tmp_path/"missing.yaml", outputs=out)
    assert r.returncode == 2 and "missing.yaml" in r.stderr
    (tmp_path/"broken.yaml").write_text("notebook: [unclosed\n")
    r = cxr_nb("run", tmp_path/"broken.yaml", outputs=out)
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    (tmp_path/"nonb.yaml").write_text("notebook: nowhere.ipynb\n")
    r = cxr_nb("run", tmp_path/"nonb.yaml", outputs=out)
    assert r.returncode == 2 and "'nowhere.ipynb' not found" in r.stderr


def test_secrets_are_refused(study):
    "A key in a params file would be written into the executed notebook by papermill: refused before running."
    nb, out = study
    src = nbformat.read(nb, as_version=4)
    src.cells[0].source += '\nopenai_api_key = ""'
    nbformat.write(src, nb)
    p = write_params(nb.parent/"k.yaml", nb, openai_api_key="sk-do-not-leak")
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 2 and "look like secrets" in r.stderr and "OPENAI_API_KEY" in r.stderr
    assert not out.exists()


def test_list_shows_studies(tmp_path):
    r = cxr_nb("list", outputs=tmp_path/"outputs")
    assert r.returncode == 0
    assert "environment" in r.stdout and "demo" in r.stdout and "00_environment.ipynb" in r.stdout


def test_study_kernel_gets_a_short_openmp_spin_unless_the_user_chose(tmp_path):
    body = "(out/'env.json').write_text(json.dumps({k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}))"
    nb = toy_study(tmp_path, body)
    params = write_params(tmp_path/"env.yaml", nb, n=1)
    from cxr_nb.runner import KERNEL_ENV, OPENMP_WAIT_CHOICES
    env_without = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_CHOICES}
    r = subprocess.run([str(CLI), "run", "--quiet", str(params)], capture_output=True, text=True, timeout=600,
                       env={**env_without, "CXR_OUTPUTS": str(tmp_path/"a")})
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/"a"/"toy"/"env"/"env.json").read_text()) == {"OMP_WAIT_POLICY": None, **KERNEL_ENV}
    r = subprocess.run([str(CLI), "run", "--quiet", str(params)], capture_output=True, text=True, timeout=600,
                       env={**env_without, "CXR_OUTPUTS": str(tmp_path/"b"), "OMP_WAIT_POLICY": "PASSIVE"})
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/"b"/"toy"/"env"/"env.json").read_text()) == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}
