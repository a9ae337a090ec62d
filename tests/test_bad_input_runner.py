"""Bad-input catalogue: the runner and core against bad params files, bad notebooks, hostile folders and signals.

Each case states its behaviour (see `badinput.py`): refused before anything runs, naming the key, path, parameter or
process; or, for faults (a second run of the same run, SIGTERM, SIGKILL), the run folder and `run.json` left in a
state that says what happened and that the next `cxr-nb run` repairs. Before issue 8: nested secrets reached run.json
and the executed notebook, a repeated YAML key kept its last value silently, a wrong-typed value ran until it broke,
a non-notebook path gave a JSON traceback, an unwritable folder a bare OSError, manifests were 0600 under any umask,
two runs of one run deleted each other's files and both said `completed`, and SIGTERM left run.json at `running`."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pytest

from badinput import refused
from cxr_nb.core import (RunFolder, atomic_dir, atomic_write_text, find_secrets, is_secret_name, pid_alive, redact,
                         write_json, writable_dir)
from cxr_nb.runner import (MANIFEST, ParameterError, RunLockedError, RunSpec, check_parameters, execute, list_studies,
                           load_spec, lock_holder, main, run_lock, run_status, stale_weights)
from test_runner import CLI, cxr_nb, toy_study, write_params

# ---------------------------------------------------------------------------------------------------------- secrets
SECRET_NAMES = ["openai_key", "access_key", "private_key", "aws_secret_access_key", "hf_token", "apiKey", "APIKey",
                "db_pwd", "passphrase", "auth", "bearer", "openaikey", "OPENAI_API_KEY", "x-api-key", "smtp.password",
                "clientSecret", "api_keys", "dbPassword2", "ssh-passphrase", "credentials"]
HARMLESS_NAMES = ["keep", "monkey", "n_keypoints", "keyframe", "tokenizer", "max_tokens", "max_new_tokens", "donkey_id",
                  "lr", "out_dir", "val_frac", "image_dirs", "keyword", "passes", "turkey", "n_epochs", "monkeyPatch"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert is_secret_name(name), f"{name!r} would hold a secret"


@pytest.mark.parametrize("name", HARMLESS_NAMES)
def test_harmless_names(name):
    assert not is_secret_name(name), f"{name!r} is not a secret"


NESTED = [
    pytest.param({"api": {"openai_key": "sk-LEAK"}}, ["api.openai_key"], id="dict-in-dict"),
    pytest.param({"models": [{"name": "a"}, {"token": "LEAK"}]}, ["models[1].token"], id="dict-in-list"),
    pytest.param({"a": {"b": [{"c": {"hfToken": "LEAK"}}]}}, ["a.b[0].c.hfToken"], id="four-levels-deep"),
    pytest.param({"llm": {"apiKey": "LEAK"}, "db": {"pwd": 424242}}, ["llm.apiKey", "db.pwd"], id="two-and-a-number"),
    pytest.param({"s3": {"aws_secret_access_key": "LEAK", "bucket": "b"}}, ["s3.aws_secret_access_key"], id="aws"),
    pytest.param({"credentials": {"user": "LEAK", "password": "LEAK"}}, ["credentials"], id="secret-block-named-once"),
    pytest.param({"grid": [[{"bearer": "LEAK"}]]}, ["grid[0][0].bearer"], id="list-in-list"),
    pytest.param([{"x-api-key": "LEAK"}], ["[0].x-api-key"], id="top-level-list"),
]


@pytest.mark.parametrize("params, paths", NESTED)
def test_nested_secrets_found_and_redacted(params, paths):
    assert find_secrets(params) == paths
    kept = json.dumps(redact(params))
    assert "LEAK" not in kept and "424242" not in kept and kept.count('"***"') == len(paths), kept


@pytest.mark.parametrize("params", [
    pytest.param({"token": ""}, id="empty-string"), pytest.param({"token": "   "}, id="blank-string"),
    pytest.param({"hf_token": None}, id="none"), pytest.param({"use_auth_token": True}, id="bool-switch"),
    pytest.param({"api_keys": []}, id="empty-list"), pytest.param({"auth": {}}, id="empty-mapping"),
    pytest.param({"tokenizer": "bert", "max_tokens": 512}, id="harmless-names")])
def test_not_secrets(params):
    assert find_secrets(params) == [] and redact(params) == params


@pytest.fixture
def toy(tmp_path):
    "A toy study whose parameters cell also declares an `llm` mapping and a `models` list (so nesting is legal)."
    nb = toy_study(tmp_path)
    src = nbformat.read(nb, as_version=4)
    src.cells[0].source += "\nllm = {}\nmodels = []"
    nbformat.write(src, nb)
    return nb


@pytest.mark.parametrize("params, paths", [
    pytest.param({"llm": {"openai_key": "sk-do-not-leak"}}, ["llm.openai_key"], id="nested-key"),
    pytest.param({"models": [{"name": "a"}, {"name": "b", "hf_token": "hf-do-not-leak"}]}, ["models[1].hf_token"],
                 id="key-in-list"),
    pytest.param({"n": 2, "llm": {"auth": {"bearer": "do-not-leak"}}}, ["llm.auth"], id="auth-block"),
])
def test_nested_secrets_refused_before_anything_runs(toy, tmp_path, params, paths):
    p = tmp_path/"k.yaml"
    p.write_text(json.dumps({"notebook": str(toy), "parameters": params}))
    refused(lambda: check_parameters(load_spec(p)), ParameterError, str(p), *paths, "OPENAI_API_KEY")
    refused(lambda: execute(load_spec(p), tmp_path/"out", progress=False), ParameterError, *paths)
    assert not (tmp_path/"out").exists(), "nothing may be written: no executed notebook, no run.json"


# ----------------------------------------------------------------------------------------------- params files (YAML)
DUPLICATES = [
    pytest.param("notebook: {nb}\nnotebook: {nb}\n", "'notebook'", (1, 2), id="top-level"),
    pytest.param("notebook: {nb}\nparameters:\n  n: 1\n  fail: false\n  n: 2\n", "'n'", (3, 5), id="in-parameters"),
    pytest.param("notebook: {nb}\nparameters:\n  llm:\n    model: a\n    model: b\n", "'model'", (4, 5), id="nested"),
    pytest.param("notebook: {nb}\nparameters: {{n: 1, n: 2}}\n", "'n'", (2, 2), id="flow-mapping-one-line"),
    pytest.param("notebook: {nb}\nparameters:\n  models:\n    - {{a: 1}}\n    - {{b: 1, b: 2}}\n", "'b'", (5, 5),
                 id="mapping-in-list"),
    pytest.param("notebook: {nb}\nparameters:\n  1: a\n  1: b\n", "1", (3, 4), id="integer-key"),
    pytest.param("notebook: {nb}\nrun: a\nparameters: {{}}\nrun: b\n", "'run'", (2, 4), id="run-name-twice"),
]


@pytest.mark.parametrize("text, key, lines", DUPLICATES)
def test_repeated_yaml_key_refused(toy, tmp_path, text, key, lines):
    p = tmp_path/"dup.yaml"
    p.write_text(text.format(nb=toy))
    refused(lambda: load_spec(p), ValueError, str(p), f"key {key} appears twice", f"lines {lines[0]} and {lines[1]}")


def test_yaml_merge_keys_may_be_overridden(toy, tmp_path):
    "`<<: *defaults` then an explicit key is YAML's way to override, not a repetition."
    p = tmp_path/"merge.yaml"
    p.write_text(f"notebook: {toy}\nparameters:\n  llm: {{<<: {{model: a, t: 1}}, model: b}}\n")
    assert load_spec(p).parameters == {"llm": {"model": "b", "t": 1}}


BAD_PARAMS_FILES = [
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00", ValueError, ["is not a text file"], id="binary-file"),
    pytest.param(b"notebook: x\n\tparameters: {}\n", ValueError, ["not valid YAML"], id="tab-indent"),
    pytest.param(b"notebook: !!python/object:os.system x\n", ValueError, ["not valid YAML"], id="python-tag"),
    pytest.param(b"", ValueError, ["expected a mapping"], id="empty-file"),
    pytest.param(b"- notebook: x\n", ValueError, ["expected a mapping", "list"], id="top-level-list"),
    pytest.param(b"notebook: x.ipynb\nparameters: [1, 2]\n", ValueError, ["must be a mapping"], id="parameters-list"),
    pytest.param(b"notebook: {NB}\nrun: ../escape\n", ValueError, ["'../escape'", "plain folder name"], id="run-path"),
]


@pytest.mark.parametrize("content, exc, named", BAD_PARAMS_FILES)
def test_bad_params_file_refused(toy, tmp_path, content, exc, named):
    p = tmp_path/"bad.yaml"
    p.write_bytes(content.replace(b"{NB}", str(toy).encode()))
    refused(lambda: load_spec(p), exc, str(p), *named)


# ------------------------------------------------------------------------------------------- not a notebook at all
NOT_NOTEBOOKS = [
    pytest.param("x.yaml", "notebook: a.ipynb\nparameters: {}\n", "not JSON", id="a-params-file"),
    pytest.param("x.py", "out_dir = ''\nprint(1)\n", "not JSON", id="a-python-script"),
    pytest.param("x.ipynb", "", "empty", id="empty-ipynb"),
    pytest.param("x.ipynb", None, "not JSON", id="truncated-ipynb"),
    pytest.param("x.ipynb", "[1, 2]", "AttributeError", id="json-list"),
    pytest.param("x.ipynb", "{}", "ValidationError", id="json-empty-object"),
    pytest.param("x.ipynb", '{"nbformat": 99, "nbformat_minor": 0, "metadata": {}, "cells": []}', "Unsupported nbformat",
                 id="future-nbformat"),
    pytest.param("x.ipynb", b"\x89PNG\r\n\x1a\n\x00\xff", "not JSON", id="png-renamed"),
]


@pytest.mark.parametrize("name, content, why", NOT_NOTEBOOKS)
def test_not_a_notebook_refused(toy, tmp_path, name, content, why):
    nb = tmp_path/name
    if content is None: nb.write_text(toy.read_text()[:150])
    elif isinstance(content, bytes): nb.write_bytes(content)
    else: nb.write_text(content)
    p = write_params(tmp_path/"a.yaml", nb)
    msg = refused(lambda: check_parameters(load_spec(p)), ValueError, str(nb), "is not a Jupyter notebook (nbformat JSON)",
                  why)
    assert "Traceback" not in msg and len(msg) < 600


def notebook_with(tmp_path, params_source: str|None, kernelspec=True, extra_params_cell=False) -> Path:
    nb = nbformat.v4.new_notebook()
    if kernelspec: nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [nbformat.v4.new_code_cell(params_source or "x = 1")]
    if params_source is not None: cells[0].metadata["tags"] = ["parameters"]
    if extra_params_cell:
        cells.append(nbformat.v4.new_code_cell("y = 2")); cells[-1].metadata["tags"] = ["parameters"]
    nb.cells = cells
    path = tmp_path/"07_nb.ipynb"
    nbformat.write(nb, path)
    return path


BAD_NOTEBOOKS = [
    pytest.param(dict(params_source='out_dir = ""', kernelspec=False), ["No kernel name", "open and save it in Jupyter"],
                 id="no-kernelspec"),
    pytest.param(dict(params_source=None), ["exactly one cell tagged 'parameters', found 0"], id="no-parameters-cell"),
    pytest.param(dict(params_source='out_dir = ""', extra_params_cell=True), ["found 2"], id="two-parameters-cells"),
    pytest.param(dict(params_source='out_dir = ""\nn = (1,'), ["not valid Python"], id="parameters-cell-syntax-error"),
    pytest.param(dict(params_source="n = 1"), ["must declare out_dir"], id="no-out_dir"),
    pytest.param(dict(params_source='out_dir = ""\nval_frac = 0.2  # md5 % 5 == 0'), ["cannot read parameter(s) ['val_frac']"],
                 id="comment-with-equals-hides-a-parameter"),
]


@pytest.mark.parametrize("how, named", BAD_NOTEBOOKS)
def test_bad_study_notebook_refused(tmp_path, how, named):
    nb = notebook_with(tmp_path, **how)
    p = write_params(tmp_path/"a.yaml", nb)
    refused(lambda: check_parameters(load_spec(p)), ParameterError, str(nb), *named)


# ----------------------------------------------------------------------------------------------- parameter types
TYPED_CELL = ('out_dir = ""\nn_epochs = 3\nlr = 0.001\nname = "densenet"\namp = True\nlabels = ["a", "b"]\n'
              'size = (224, 224)\nopts = {"k": 1}\nweights = None\nderived = 2 * 3\nneg = -1')


@pytest.fixture
def typed(tmp_path):
    nb = toy_study(tmp_path)
    src = nbformat.read(nb, as_version=4)
    src.cells[0].source = TYPED_CELL
    nbformat.write(src, nb)
    return nb


def spec_with(nb, tmp_path, text: str) -> RunSpec:
    p = tmp_path/"t.yaml"
    p.write_text(f"notebook: {nb}\nparameters:\n" + "".join(f"  {line}\n" for line in text.splitlines()))
    return load_spec(p)


WRONG_TYPES = [
    pytest.param("n_epochs: five", ["n_epochs = 'five' (str)", "expected int", "default 3"], id="str-for-int"),
    pytest.param("n_epochs: 5.0", ["n_epochs = 5.0 (float)", "expected int"], id="float-for-int"),
    pytest.param("n_epochs: true", ["n_epochs = True (bool)", "expected int"], id="bool-for-int"),
    pytest.param("n_epochs: null", ["n_epochs = None (NoneType)", "expected int"], id="null-for-int"),
    pytest.param("lr: 1e-4", ["lr = '1e-4' (str)", "expected float", "write 1.0e-4"], id="yaml-1e-4-is-a-string"),
    pytest.param("lr: fast", ["lr = 'fast' (str)", "expected float"], id="word-for-float"),
    pytest.param("lr: false", ["lr = False (bool)", "expected float"], id="bool-for-float"),
    pytest.param("name: 121", ["name = 121 (int)", "expected str", "default \"densenet\""], id="int-for-str"),
    pytest.param("name: no", ["name = False (bool)", "expected str", "quote the value"], id="yaml-no-is-a-bool"),
    pytest.param("name: [densenet]", ["name = ['densenet'] (list)", "expected str"], id="list-for-str"),
    pytest.param("amp: 1", ["amp = 1 (int)", "expected bool"], id="int-for-bool"),
    pytest.param("amp: 'true'", ["amp = 'true' (str)", "expected bool"], id="quoted-true-for-bool"),
    pytest.param("labels: a,b", ["labels = 'a,b' (str)", "expected list"], id="str-for-list"),
    pytest.param("labels: {a: 1}", ["labels = {'a': 1} (dict)", "expected list"], id="dict-for-list"),
    pytest.param("size: 224", ["size = 224 (int)", "expected list", "default (224, 224)"], id="int-for-tuple"),
    pytest.param("opts: [k, 1]", ["opts = ['k', 1] (list)", "expected dict"], id="list-for-dict"),
    pytest.param("neg: '-1'", ["neg = '-1' (str)", "expected int"], id="quoted-negative"),
    pytest.param("n_epochs: x\nlr: y", ["n_epochs = 'x'", "lr = 'y'"], id="every-bad-one-named"),
    pytest.param("n_epochs: [" + ", ".join(["x"*10]*20) + "]", ["n_epochs = ['xxxxxxxxxx'", "...", "(list), expected int"],
                 id="long-value-shortened"),
]


@pytest.mark.parametrize("text, named", WRONG_TYPES)
def test_wrong_type_refused(typed, tmp_path, text, named):
    spec = spec_with(typed, tmp_path, text)
    refused(lambda: check_parameters(spec), ParameterError, str(spec.params_file), typed.name, *named)
    refused(lambda: execute(spec, tmp_path/"out", progress=False), ParameterError, *named[:1])
    assert not (tmp_path/"out").exists(), "refused before anything ran"


@pytest.mark.parametrize("text", [
    pytest.param("n_epochs: 10", id="int-for-int"), pytest.param("lr: 1", id="int-for-float"),
    pytest.param("lr: 1.0e-4", id="float-for-float"), pytest.param("name: resnet", id="str-for-str"),
    pytest.param("amp: false", id="bool-for-bool"), pytest.param("labels: []", id="empty-list"),
    pytest.param("size: [256, 256]", id="list-for-tuple"), pytest.param("opts: {}", id="dict-for-dict"),
    pytest.param("weights: /w.pt", id="none-default-takes-str"), pytest.param("weights: [1, 2]", id="none-default-takes-list"),
    pytest.param("derived: text", id="expression-default-takes-anything"), pytest.param("neg: -5", id="negative-int"),
])
def test_right_type_accepted(typed, tmp_path, text):
    assert "n_epochs" in check_parameters(spec_with(typed, tmp_path, text))


# ------------------------------------------------------------------------------------------- unwritable folders
def under_a_file(tmp_path) -> Path:
    "A folder path that cannot be created, even by root: its parent is a regular file (NotADirectoryError)."
    blocker = tmp_path/"blocker"
    blocker.write_text("a file, not a folder")
    return blocker/"sub"


UNWRITABLE_CALLS = [
    pytest.param(lambda d: atomic_write_text(d/"run.json", "{}"), id="atomic_write_text"),
    pytest.param(lambda d: write_json(d/"metrics.json", {"auc": 0.5}), id="write_json"),
    pytest.param(lambda d: atomic_dir(d/"cache").__enter__(), id="atomic_dir"),
    pytest.param(lambda d: RunFolder(d/"run"), id="RunFolder"),
    pytest.param(lambda d: writable_dir(d), id="writable_dir"),
]


@pytest.mark.parametrize("call", UNWRITABLE_CALLS)
def test_folder_under_a_file_refused(tmp_path, call):
    d = under_a_file(tmp_path)
    refused(lambda: call(d), PermissionError, str(tmp_path/"blocker"), "CXR_OUTPUTS", "CXR_DATA_ROOT")


def chmod_denies(tmp_path) -> bool:
    "Whether a chmod 0o500 folder stops this process (not for root with CAP_DAC_OVERRIDE, the usual root)."
    probe = tmp_path/"probe"; probe.mkdir(); probe.chmod(0o500)
    try: (probe/"x").mkdir(); return False
    except PermissionError: return True
    finally: probe.chmod(0o700)


@pytest.mark.parametrize("call", UNWRITABLE_CALLS)
def test_folder_without_write_permission_refused(tmp_path, call):
    if not chmod_denies(tmp_path): pytest.skip("root writes through chmod 0o500; the file-in-the-way and /sys cases cover it")
    ro = tmp_path/"ro"; ro.mkdir(); ro.chmod(0o500)
    try: refused(lambda: call(ro/"sub"), PermissionError, str(ro), "CXR_OUTPUTS")
    finally: ro.chmod(0o700)


@pytest.mark.parametrize("call", UNWRITABLE_CALLS)
def test_folder_in_sysfs_refused_even_for_root(call):
    "/sys refuses new entries to everyone, root included: a real EPERM wherever Linux mounts sysfs."
    if not Path("/sys/kernel").is_dir(): pytest.skip("no sysfs here")
    refused(lambda: call(Path("/sys/cxr-nb-test")), PermissionError, "/sys/cxr-nb-test", "Operation not permitted")


def test_file_in_place_of_the_run_folder_refused(toy, tmp_path):
    out = tmp_path/"outputs"
    (out/"toy").mkdir(parents=True)
    (out/"toy"/".a.lock").mkdir()                        # the lock file's name is taken by a folder
    p = write_params(tmp_path/"a.yaml", toy)
    refused(lambda: execute(load_spec(p), out, progress=False), PermissionError, str(out/"toy"), "--outputs", "CXR_OUTPUTS")


def test_unwritable_outputs_refused_by_execute(toy, tmp_path):
    p = write_params(tmp_path/"a.yaml", toy)
    bad = under_a_file(tmp_path)
    refused(lambda: execute(load_spec(p), bad, progress=False), PermissionError, str(tmp_path/"blocker"), "--outputs DIR",
            "CXR_OUTPUTS")


def test_unwritable_cache_root_refused_by_build_cache(tmp_path):
    from cxr_nb.preprocess import Preprocess, build_cache
    paths = pngs(tmp_path)
    refused(lambda: build_cache(paths, Preprocess(size=32), root=under_a_file(tmp_path), progress=False),
            PermissionError, str(tmp_path/"blocker"), "root=", "CXR_DATA_ROOT")


# ------------------------------------------------------------------------------------------------------ umask
def pngs(tmp_path, n=3) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = [tmp_path/f"img{i}.png" for i in range(n)]
    for p in paths: assert cv2.imwrite(str(p), rng.integers(0, 255, (48, 40), dtype=np.uint8))
    return paths


@pytest.fixture(params=[0o022, 0o002], ids=["umask-022", "umask-002"])
def umask(request):
    old = os.umask(request.param)
    try: yield request.param
    finally: os.umask(old)


def mode(p: Path) -> int: return p.stat().st_mode & 0o777


def test_written_files_follow_the_umask(tmp_path, umask):
    f = write_json(tmp_path/"m.json", {"a": 1})
    assert mode(f) == 0o666 & ~umask
    with atomic_dir(tmp_path/"ds") as stage: (stage/"labels.csv").write_text("a\n")
    assert mode(tmp_path/"ds") == 0o777 & ~umask and mode(tmp_path/"ds"/"labels.csv") == 0o666 & ~umask
    run = RunFolder(tmp_path/"runs"/"a"); run.write_metrics(n=1)
    assert mode(run.path) == 0o777 & ~umask and mode(run.path/"metrics.json") == 0o666 & ~umask


def test_cache_follows_the_umask(tmp_path, umask):
    from cxr_nb.preprocess import Preprocess, build_cache
    cache = build_cache(pngs(tmp_path), Preprocess(size=32), root=tmp_path/"cache", progress=False)
    assert mode(cache.path) == 0o777 & ~umask, oct(mode(cache.path))
    for name in ("manifest.json", "images.npy"):
        assert mode(cache.path/name) == 0o666 & ~umask, (name, oct(mode(cache.path/name)))


# ---------------------------------------------------------------------------------------------- the command line
def cli_cases(toy, tmp_path) -> dict:
    "params files (or argv) that must each give exit 2 and one line naming the thing."
    def params(name, text):
        (tmp_path/name).write_text(text.format(nb=toy)); return str(tmp_path/name)
    not_nb = tmp_path/"notes.py"; not_nb.write_text("print(1)\n")
    return {
        "duplicate-key": ([params("d.yaml", "notebook: {nb}\nparameters:\n  n: 1\n  n: 2\n")], ["'n' appears twice", "d.yaml"]),
        "wrong-type": ([params("t.yaml", "notebook: {nb}\nparameters:\n  n: five\n")], ["n = 'five' (str)", "t.yaml"]),
        "nested-secret": ([params("s.yaml", "notebook: {nb}\nparameters:\n  llm: {{openai_key: sk-1}}\n")],
                          ["llm.openai_key", "s.yaml"]),
        "not-a-notebook": ([params("n.yaml", f"notebook: {not_nb}\n")], [str(not_nb), "not a Jupyter notebook"]),
        "binary-params": ([str(tmp_path/"img0.png")], ["img0.png", "not a text file"]),
        "unwritable-outputs": (["--outputs", str(under_a_file(tmp_path)), params("ok.yaml", "notebook: {nb}\n")],
                               [str(tmp_path/"blocker"), "--outputs DIR"]),
    }


CLI_CASES = ["duplicate-key", "wrong-type", "nested-secret", "not-a-notebook", "binary-params", "unwritable-outputs"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_one_line_and_exit_2(toy, tmp_path, capsys, case):
    pngs(tmp_path, 1)
    argv, named = cli_cases(toy, tmp_path)[case]
    outputs = [] if "--outputs" in argv else ["--outputs", str(tmp_path/"out")]
    assert main(["run", "--quiet", *outputs, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cxr-nb: error: ") and "\n" not in err, err
    assert all(n in err for n in named), (named, err)
    assert not (tmp_path/"out").exists()


# ------------------------------------------------------------------------- two runs at once, SIGTERM, SIGINT, SIGKILL
def slow_toy(tmp_path) -> tuple[Path, Path]:
    "A toy study whose last cell writes the kernel's pid, waits $TOY_SLEEP seconds or until the file $TOY_RELEASE exists, then writes done.txt."
    nb = toy_study(tmp_path, body="import time\n(out/'kernel.pid').write_text(str(os.getpid()))\n"
                                  "release, until = os.environ.get('TOY_RELEASE'), time.time() + float(os.environ.get('TOY_SLEEP', 0))\n"
                                  "while time.time() < until and not (release and os.path.exists(release)): time.sleep(0.1)\n"
                                  "(out/'done.txt').write_text('ok')")
    params = tmp_path/"params"/"toy"
    params.mkdir(parents=True)
    return nb, write_params(params/"a.yaml", nb, n=7)


def start_run(p: Path, out: Path, sleep: float, release: Path | None = None) -> subprocess.Popen:
    "`cxr-nb run p` in the background; returns once its notebook is in the waiting cell (which ends after `sleep` s or once `release` exists)."
    env = {**os.environ, "CXR_OUTPUTS": str(out), "TOY_SLEEP": str(sleep), **({"TOY_RELEASE": str(release)} if release else {})}
    proc = subprocess.Popen([str(CLI), "run", "--quiet", str(p)], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out/"toy"/"a"/"kernel.pid").is_file():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill(); raise AssertionError(f"the slow run did not start: {proc.communicate()}")
        time.sleep(0.2)
    return proc


def gone(pid: int, within: float = 20) -> bool:
    deadline = time.time() + within
    while pid_alive(pid) and time.time() < deadline: time.sleep(0.2)
    return not pid_alive(pid)


def test_second_run_of_the_same_run_is_refused(tmp_path):
    nb, p = slow_toy(tmp_path)
    out = tmp_path/"outputs"; run = out/"toy"/"a"
    release = tmp_path/"release"        # the first run waits for it: a loaded machine cannot let it finish before the second starts
    first = start_run(p, out, sleep=300, release=release)
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert line.startswith("cxr-nb: error:") and "\n" not in line, line
    assert f"pid {first.pid} on {socket.gethostname()}" in line and "being run" in line and str(run) in line
    refused(lambda: execute(load_spec(p), out, force=True, progress=False), RunLockedError, f"pid {first.pid}")
    assert json.loads((run/MANIFEST).read_text())["pid"] == first.pid and (run/"kernel.pid").is_file(), \
        "the refused runs touched nothing"
    assert run_status(run).status == "running" and lock_holder(run)["pid"] == first.pid
    release.touch()
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    m = json.loads((run/MANIFEST).read_text())
    assert m["status"] == "completed" and m["artifacts"] == ["07_toy.ipynb", "done.txt", "kernel.pid", "metrics.json"]
    assert lock_holder(run) is None, "the lock goes with the run"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_interrupts_the_run_cleanly(tmp_path, sig, code):
    nb, p = slow_toy(tmp_path)
    out = tmp_path/"outputs"; run = out/"toy"/"a"
    proc = start_run(p, out, sleep=60)
    kernel = int((run/"kernel.pid").read_text())
    t0 = time.time()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code and time.time() - t0 < 30, (proc.returncode, stderr)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"cxr-nb: interrupted by {sig.name}") and "rerun" in last, stderr
    assert "KeyboardInterrupt" not in stderr and "cxr_nb/" not in stderr, "no traceback of the runner's own"
    m = json.loads((run/MANIFEST).read_text())
    assert m["status"] == "interrupted" and sig.name in m["error"] and m["end"] and m["pid"] == proc.pid
    assert gone(kernel), "the notebook's kernel was left running"
    assert lock_holder(run) is None
    r = cxr_nb("run", "--quiet", p, outputs=out)             # same params: rerun, not skipped
    assert r.returncode == 0 and "skipped" not in r.stdout, r.stderr
    assert json.loads((run/MANIFEST).read_text())["status"] == "completed"


def test_sigkilled_run_reads_interrupted_and_reruns(tmp_path):
    nb, p = slow_toy(tmp_path)
    out = tmp_path/"outputs"; run = out/"toy"/"a"
    proc = start_run(p, out, sleep=60)
    kernel = int((run/"kernel.pid").read_text())
    try:
        proc.kill(); proc.communicate(timeout=30)
        assert json.loads((run/MANIFEST).read_text())["status"] == "running", "SIGKILL leaves the file as it was"
        m = run_status(run)
        assert m.status == "interrupted" and f"pid {proc.pid}" in m.error
        assert [r["last"] for r in list_studies(tmp_path/"params", out)] == ["interrupted"]
        r = cxr_nb("list", "--params-dir", tmp_path/"params", outputs=out)
        assert r.returncode == 0 and "interrupted" in r.stdout, r.stdout
        r = cxr_nb("run", "--quiet", p, outputs=out)
        assert r.returncode == 0 and "skipped" not in r.stdout, r.stderr
        assert json.loads((run/MANIFEST).read_text())["status"] == "completed"
    finally:
        if pid_alive(kernel): os.kill(kernel, signal.SIGKILL)


def test_running_without_lock_file_falls_back_on_the_pid(toy, tmp_path):
    "A run folder copied from elsewhere, or a lock file deleted by hand: the recorded pid on this host decides."
    p = write_params(tmp_path/"a.yaml", toy)
    out = tmp_path/"outputs"; run = out/"toy"/"a"
    execute(load_spec(p), out, progress=False)
    m = json.loads((run/MANIFEST).read_text())
    (out/"toy"/".a.lock").unlink()
    write_json(run/MANIFEST, {**m, "status": "running", "pid": os.getpid()})     # alive: this very process
    assert run_status(run).status == "running"
    write_json(run/MANIFEST, {**m, "status": "running", "pid": 2**22 + 13})      # no such process
    assert run_status(run).status == "interrupted"
    write_json(run/MANIFEST, {**m, "status": "running", "host": {"hostname": "elsewhere"}})
    assert run_status(run).status == "running", "another host's pid says nothing here"
    with run_lock(run): assert run_status(run).status == "running"


def test_a_run_json_start_that_is_not_a_time_reruns_a_run_that_used_a_backbone(toy, tmp_path):
    "A hand-edited run.json whose start cannot be read: its in-domain backbones cannot be dated, so the run is rerun, naming the file."
    p = write_params(tmp_path/"a.yaml", toy)
    out = tmp_path/"outputs"; run = out/"toy"/"a"
    execute(load_spec(p), out, progress=False)
    backbone = tmp_path/"weights.safetensors"; backbone.write_bytes(b"a backbone")
    os.utime(backbone, (time.time() - 3600,) * 2)                     # pretrained an hour before the run
    record = {"model": "densenet121", "weights_source": "in-domain", "path": str(backbone)}
    m = json.loads((run/MANIFEST).read_text())
    write_json(run/MANIFEST, {**m, "weights": {"in-domain": record}})
    assert stale_weights(run) == []                                    # dated: written before the run, still current
    write_json(run/MANIFEST, {**m, "weights": {"in-domain": record}, "start": "yesterday"})
    assert stale_weights(run) == [f"{run/MANIFEST}: its start 'yesterday' is not an ISO time, so its backbones cannot be dated"]
    r = cxr_nb("run", "--quiet", p, outputs=out)
    assert r.returncode == 0 and "skipped" not in r.stdout and "not an ISO time" in r.stdout, r.stdout


def test_synth_sigterm_exits_143_and_removes_its_staging_folder(tmp_path):
    target = tmp_path/"nih"
    proc = subprocess.Popen([str(CLI), "synth", "nih", str(target), "--n", "3000", "--size", "64", "--workers", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not any(".partial-" in q.name for q in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)   # a SIGTERM dropped by a finalizer ends only at the commit (core's lesson)
    assert proc.returncode == 143 and stderr.strip().startswith("cxr-nb: interrupted by SIGTERM"), stderr
    assert "Traceback" not in stderr and list(tmp_path.iterdir()) == []


# --- issue 13: headlines, the index page and the README's results -------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (("AUROC", 0.9, 0.7, 0.8), ["does not contain its value 0.9"]),
    (("AUROC", 0.9, 0.7), ["both ends of the CI"]),
    (("AUROC", 0.9), ["weights='imagenet'", "not one of"]),
])
def test_headline_refuses_a_number_that_cannot_be_true(tmp_path, args, named):
    run = RunFolder(tmp_path/"run")
    kw = {"weights": "imagenet"} if len(args) == 2 else {}
    refused(lambda: run.headline(*args, **kw), ValueError, *named)


def test_headline_refuses_a_negative_n_and_a_second_number_of_the_same_name(tmp_path):
    run = RunFolder(tmp_path/"run")
    refused(lambda: run.headline("films", 3, n=-2), ValueError, "'films'", "-2")
    run.headline("films", 3)
    refused(lambda: run.headline("films", 4), ValueError, "'films'", "already noted")


def test_report_renders_around_a_half_written_notebook(tmp_path):
    "A run whose executed notebook is cut short: its row says the notebook was not rendered, and the page is written."
    folder = tmp_path/"outputs"/"toy"/"demo"
    folder.mkdir(parents=True)
    write_json(folder/MANIFEST, {"study": "toy", "run": "demo", "status": "completed", "notebook": "07_toy.ipynb",
                                 "duration_s": 3.0})
    (folder/"07_toy.ipynb").write_text('{"cells": [')
    assert main(["report", "--outputs", str(tmp_path/"outputs"), "--quiet"]) == 0
    page = (tmp_path/"outputs"/"index.html").read_text()
    assert "notebook not rendered" in page and not (folder/"notebook.html").exists()


def test_readme_without_result_markers_is_refused_and_left_alone(tmp_path):
    readme = tmp_path/"README.md"
    readme.write_text("# a README with no markers\n")
    (tmp_path/"outputs").mkdir()
    assert main(["report", "--outputs", str(tmp_path/"outputs"), "--readme", str(readme), "--quiet"]) == 2
    assert readme.read_text() == "# a README with no markers\n"
