"""Bad-input catalogue: what the model registry, the weight resolver and the transfer operations are handed.
Each case is refused naming the value, the file or the policy, and says what to do (see `badinput.py`)."""
from __future__ import annotations

import pytest
import torch
import torchxrayvision as xrv

from badinput import refused
from cxr_nb.models import build_model, model_spec, read_weights, resolve_weights, set_trainable, swap_head


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
], ids=["unknown-name", "misspelt-xrv-name", "unknown-build", "xrv-weights-offline", "torchvision-weights-offline",
        "explicit-path-missing", "pickled-payload", "not-a-weights-file", "not-a-state-dict", "other-architecture",
        "other-shapes", "unknown-stage", "unknown-policy", "empty-head", "calibrated-without-thresholds"])
def test_bad_model_input_is_refused_naming_the_value(files, call, exc, named):
    refused(lambda: call(files), exc, *named)


def test_a_pickled_payload_never_runs(files, capsys):
    with pytest.raises(ValueError):
        read_weights(files/"evil.pt")
    assert "pickled code ran" not in capsys.readouterr().out
