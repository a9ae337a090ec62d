"""Bad-input catalogue: what `python -m cxr_nb.bench train` and `openmp` are handed. A device the machine lacks, a precision it
cannot run and a precision that does not exist are refused at once, naming the value and saying what to do (see
`badinput.py`): no films are written and no model is built first. `openmp` refuses an unknown or no model and a count
below 1 before it starts a training process."""
from __future__ import annotations

import tempfile

import pytest
import torch

from badinput import refused
from cxr_nb.bench import main

CASES = {
    "unknown precision": (["--precision", "fp32"], ["precision='fp32'", "('no', 'bf16', 'fp16')", "'bf16'"]),
    "fp16 on the CPU": (["--precision", "fp16", "--device", "cpu"], ["precision='fp16' needs a GPU", "--precision bf16 or no"]),
    "fp16 with auto on a machine without a GPU": (["--precision", "fp16"], ["precision='fp16' needs a GPU", "cpu"]),
    "cuda without a GPU": (["--device", "cuda"], ["device='cuda'", "no usable GPU", "'auto' or 'cpu'"]),
}
NEEDS_NO_GPU = {"fp16 with auto on a machine without a GPU", "cuda without a GPU"}


@pytest.mark.parametrize("case", list(CASES))
def test_bench_train_refuses_at_once_naming_the_value(case, tmp_path, monkeypatch):
    if case in NEEDS_NO_GPU and torch.cuda.is_available(): pytest.skip("this machine has a GPU")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))     # where the films and the cache would go
    argv, named = CASES[case]
    refused(lambda: main(["train", *argv]), ValueError, *named)
    assert list(tmp_path.iterdir()) == [], "work was done before the refusal"


OPENMP_CASES = {
    "unknown model": (["--models", "densenet121-res224-al"], ["unknown model 'densenet121-res224-al'", "densenet121-res224-all"]),
    "no model": (["--models", ","], ["models=','"]),
    "zero threads": (["--threads", "0"], ["threads=0"]),
    "zero steps": (["--steps", "0"], ["steps=0"]),
}


@pytest.mark.parametrize("case", list(OPENMP_CASES))
def test_bench_openmp_refuses_before_starting_a_process(case, monkeypatch):
    import subprocess
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or pytest.fail("a process was started"))
    argv, named = OPENMP_CASES[case]
    refused(lambda: main(["openmp", *argv]), ValueError, *named)
    assert started == []
