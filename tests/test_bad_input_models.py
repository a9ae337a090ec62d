"""Bad-input catalogue: what the model registry, the weight resolver and the transfer operations are handed.
Each case is refused naming the value, the file or the policy, and says what to do (see `badinput.py`)."""
from __future__ import annotations

import pytest
import torch
import torchxrayvision as xrv

from badinput import refused
from cxr_nb.models import (apply_lora, build_model, linear_probe, model_spec, prototype_head, read_weights, resolve_weights,
                           set_trainable, swap_head)


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    torch.save({"w": Payload()}, d/"evil.pt")
    torch.save(torch.nn.Linear(3, 2).state_dict(), d/"linear.pt")
    torch.save(xrv.models.DenseNet(weights=None, num_classes=14, growth_rate=8, block_config=(1, 1, 1, 1),
                                   num_init_features=16), d/"tiny-xrv.pt")
    (d/"garbage.pt").write_bytes(b"not a weights file at all")
    torch.save([torch.zeros(3)], d/"a-list.pt")
    return d


@pytest.mark.parametrize("call, exc, named", [
    (lambda f: model_spec("resnet-50"), ValueError, ["unknown model 'resnet-50'", "did you mean 'resnet50'"]),
    (lambda f: model_spec("densenet121-res224-nhi"), ValueError, ["did you mean 'densenet121-res224-nih'"]),
    (lambda f: build_model("vit-huge"), ValueError, ["unknown model 'vit-huge'", "Registered:"]),
    (lambda f: resolve_weights(model_spec("densenet121-res224-pc")), FileNotFoundError,
     ["is not in", "models_data", "xrv.models.DenseNet(weights='densenet121-res224-pc')", "weights='none'"]),
    (lambda f: resolve_weights(model_spec("resnet50")), FileNotFoundError, ["resnet50-", "hub/checkpoints", "weights='DEFAULT'"]),
    (lambda f: build_model("tiny-resnet", weights=f/"missing.pt"), FileNotFoundError, ["missing.pt not found"]),
    (lambda f: read_weights(f/"evil.pt"), ValueError, ["evil.pt", "refusing to unpickle it"]),
    (lambda f: read_weights(f/"garbage.pt"), ValueError, ["garbage.pt", "refusing to unpickle it"]),
    (lambda f: read_weights(f/"a-list.pt"), ValueError, ["a-list.pt holds a list, not a state dict"]),
    (lambda f: build_model("tiny-resnet", weights=f/"tiny-xrv.pt"), ValueError, ["tiny-xrv.pt", "does not hold weights of tiny-resnet"]),
    (lambda f: build_model("tiny-xrv-densenet", weights=f/"linear.pt"), ValueError, ["linear.pt", "does not hold weights of tiny-xrv-densenet"]),
    (lambda f: set_trainable(build_model("tiny-resnet"), "from:layer9"), ValueError, ["'from:layer9'", "'from:layer4'"]),
    (lambda f: set_trainable(build_model("tiny-resnet"), "backbone"), ValueError, ["unknown freezing policy 'backbone'"]),
    (lambda f: swap_head(build_model("tiny-resnet"), []), ValueError, ["at least one label"]),
    (lambda f: build_model("tiny-xrv-densenet").calibrated(torch.zeros(1, 1, 64, 64)), ValueError, ["no calibrated thresholds"]),
    (lambda f: apply_lora(build_model("tiny-resnet"), pattern=r"q_proj"), ValueError, ["pattern 'q_proj' matches no Conv2d", "conv1"]),
    (lambda f: apply_lora(build_model("efficientnet_b0", weights="none"), pattern=r"features\.1\.0\.block\.0\.0"), ValueError,
     ["matches no Conv2d (groups == 1)"]),
    (lambda f: prototype_head(build_model("tiny-resnet", labels=["A", "B"]), torch.rand(3, 3, 64, 64), torch.ones(3, 3)), ValueError,
     ["labels of shape (3, 3) for 3 images and 2 pathologies"]),
    (lambda f: prototype_head(build_model("tiny-resnet", labels=["A", "B"]), torch.rand(3, 3, 64, 64), torch.tensor([[1., 0], [1, 0], [0, 0]])),
     ValueError, ["no positive support image for ['B']"]),
    (lambda f: linear_probe(build_model("tiny-resnet", labels=["A"]), torch.rand(4, 3, 64, 64), torch.ones(4, 1)), ValueError,
     ["label 'A' has one class in training"]),
], ids=["unknown-name", "misspelt-xrv-name", "unknown-build", "xrv-weights-offline", "torchvision-weights-offline",
        "explicit-path-missing", "pickled-payload", "not-a-weights-file", "not-a-state-dict", "other-architecture",
        "other-shapes", "unknown-stage", "unknown-policy", "empty-head", "calibrated-without-thresholds",
        "lora-pattern-matches-nothing", "lora-on-a-depthwise-conv", "prototype-label-shape", "prototype-no-positive",
        "probe-one-class"])
def test_bad_model_input_is_refused_naming_the_value(files, call, exc, named):
    refused(lambda: call(files), exc, *named)


def test_a_pickled_payload_never_runs(files, capsys):
    with pytest.raises(ValueError):
        read_weights(files/"evil.pt")
    assert "pickled code ran" not in capsys.readouterr().out
