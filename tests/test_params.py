"""Every params file in the repository passes the runner's parameter check, and the study conventions hold:
each study notebook has its demo.yaml, and no full.yaml lets a model fall back to stand-in weights."""
from __future__ import annotations

from pathlib import Path

import pytest

from cxr_nb.runner import check_parameters, load_spec, study_name

ROOT = Path(__file__).resolve().parents[1]
PARAMS = sorted((ROOT/"params").glob("*/*.yaml"))
STUDIES = sorted((ROOT/"nbs/studies").glob("[0-9][0-9]_*.ipynb"))
FALLBACK_WEIGHTS = ("auto", "standin")   # what a full.yaml must never give a weights parameter: full runs use published weights


def _weights_values(params, at=""):
    "(name, value) of every parameter whose name mentions weights, at any depth of the mapping."
    for key, value in params.items():
        name = f"{at}{key}"
        if isinstance(value, dict): yield from _weights_values(value, f"{name}.")
        elif "weights" in str(key): yield name, value


@pytest.mark.parametrize("params_file", PARAMS, ids=lambda p: str(p.relative_to(ROOT/"params")))
def test_params_file_passes_the_runners_check(params_file):
    spec = load_spec(params_file)
    declared = check_parameters(spec)                     # names, types, secrets: raises ParameterError otherwise
    assert spec.notebook.is_file() and set(spec.parameters) <= set(declared)
    assert params_file.parent.name == study_name(spec.notebook), f"{params_file} runs {spec.notebook.name}"


@pytest.mark.parametrize("params_file", [p for p in PARAMS if p.stem == "full"], ids=lambda p: p.parent.name)
def test_full_params_never_fall_back_to_standins(params_file):
    fallbacks = [(k, v) for k, v in _weights_values(load_spec(params_file).parameters) if v in FALLBACK_WEIGHTS]
    assert not fallbacks, f"{params_file}: {fallbacks}: a full run uses the published weights ('published') or a path"


@pytest.mark.parametrize("notebook", STUDIES, ids=lambda p: p.stem)
def test_every_study_has_a_demo_params_file(notebook):
    demo = ROOT/"params"/study_name(notebook)/"demo.yaml"
    assert demo.is_file(), f"{notebook.name} has no {demo.relative_to(ROOT)}"
    assert load_spec(demo).notebook.resolve() == notebook.resolve()


SWEEPS = sorted((ROOT/"params").glob("*/sweeps/*.yaml"))


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=lambda p: str(p.relative_to(ROOT/"params")))
def test_sweep_file_expands_to_checked_runs_and_a_script_bash_accepts(sweep_file, tmp_path):
    import subprocess
    from cxr_nb.sweep import load_sweep, submit_sweep
    name, specs = load_sweep(sweep_file)                     # every combination checked like a params file
    assert len({s.run for s in specs}) == len(specs) > 1
    script = submit_sweep(sweep_file, tmp_path, partition="gpu", gpus_per_node=1, dry_run=True)
    assert f"#SBATCH --array=0-{len(specs) - 1}%" in script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def _strings(value):
    "Every string in a parameter value, at any depth."
    if isinstance(value, str): yield value
    elif isinstance(value, dict):
        for v in value.values(): yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value: yield from _strings(v)


def test_make_demo_builds_exactly_the_stand_ins_the_demos_name():
    "`make demo` builds DEMO_STANDINS, not the whole zoo: the list is the zoo models named by the demo and shortcut params."
    import re
    from cxr_nb.zoo import RECIPES
    line, = [m for m in re.findall(r"^DEMO_STANDINS\s*\?=\s*(.*)$", (ROOT/"Makefile").read_text(), re.M)]
    listed = line.split("#")[0].split()
    demos = [p for p in PARAMS if p.stem in ("demo", "shortcut")]
    named = {s for p in demos for s in _strings(load_spec(p).parameters) if s in RECIPES}
    assert set(listed) <= set(RECIPES), f"Makefile DEMO_STANDINS names no stand-in recipe: {sorted(set(listed) - set(RECIPES))}"
    assert set(listed) == named, f"Makefile DEMO_STANDINS {sorted(listed)} against the demos' stand-ins {sorted(named)}"


def test_make_test_leaves_the_users_openmp_wait_choice_alone():
    "The Makefile's WAITING sets passive waiters only where none of runner.OPENMP_WAIT_CHOICES is set: the same three names."
    import re
    from cxr_nb.runner import OPENMP_WAIT_CHOICES
    line, = re.findall(r"^WAITING\s*:=\s*(.*)$", (ROOT/"Makefile").read_text(), re.M)
    assert sorted(re.findall(r"\$\$(\w+)", line)) == sorted(OPENMP_WAIT_CHOICES), line
