"""Bad-input catalogue: what the model registry, the weight resolver and the transfer operations are handed.
Each case is refused naming the value, the file or the policy, and says what to do (see `badinput.py`)."""
from __future__ import annotations

import pytest
import torch
import torchxrayvision as xrv

from badinput import refused
from cxr_nb.models import (_clip_config, apply_lora, build_model, byte_tokenizer, check_eos, export_onnx, linear_probe,
                           model_spec, prototype_head, read_weights, resolve_weights, set_trainable, swap_head, zero_shot_head)


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
    (d/"a-file").write_text("a file where a folder should be")
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel
    save_file(CLIPModel(_clip_config(model_spec("tiny-clip"))).state_dict(), d/"tiny-clip.safetensors")
    kw, tok = model_spec("tiny-clip").build_kwargs, byte_tokenizer()
    wrong_eos = CLIPConfig(text_config={**kw["text"], "vocab_size": len(tok)}, vision_config=kw["vision"], projection_dim=32)
    CLIPModel(wrong_eos).save_pretrained(d/"clip-wrong-eos"); tok.save_pretrained(d/"clip-wrong-eos")
    return d


class BatchBranch(torch.nn.Module):
    "A forward that branches in Python on the batch size: an export records one branch."
    def __init__(self):
        super().__init__(); self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3)) * (2.0 if x.shape[0] > 2 else 1.0)


def batch_branch_model():
    m = build_model("tiny-resnet", labels=["A"])
    m.backbone, m.head = BatchBranch(), torch.nn.Linear(4, 1)
    return m


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
    (lambda f: resolve_weights(model_spec("clip-vit-b32")), FileNotFoundError,
     ["models--openai--clip-vit-base-patch32 is not in", "hub", "hf download openai/clip-vit-base-patch32", "weights='none'"]),
    (lambda f: build_model("clip-vit-b32", weights=f/"tiny-clip.safetensors"), ValueError,
     ["tiny-clip.safetensors", "does not hold weights of clip-vit-b32"]),
    (lambda f: build_model("tiny-clip", weights=f/"tiny-xrv.pt"), ValueError, ["tiny-xrv.pt", "does not hold weights of tiny-clip"]),
    (lambda f: build_model("tiny-clip", weights=f/"clip-wrong-eos"), ValueError,
     ["eos_token_id is 49407", "end-of-text id is 513", "set text_config.eos_token_id=513"]),
    (lambda f: check_eos(byte_tokenizer(), _clip_config(model_spec("clip-vit-b32")).text_config), ValueError,
     ["eos_token_id is 49407", "end-of-text id is 513"]),
    (lambda f: zero_shot_head(build_model("tiny-clip"), ["Cardiomegaly"], templates=("a chest x-ray",)), ValueError,
     ["with '{}' where the label goes", "'a chest x-ray'"]),
    (lambda f: zero_shot_head(build_model("tiny-clip"), ["Cardiomegaly"], templates=()), ValueError, ["with '{}' where the label goes"]),
    (lambda f: zero_shot_head(build_model("tiny-clip"), []), ValueError, ["non-empty list of label names, got []"]),
    (lambda f: zero_shot_head(build_model("tiny-clip"), ["Cardiomegaly", ""]), ValueError, ["label names, got ['Cardiomegaly', '']"]),
    (lambda f: zero_shot_head(build_model("tiny-resnet"), ["Cardiomegaly"]), ValueError,
     ["tiny-resnet is not a CLIP classifier", "'torchvision'", "'tiny-clip'"]),
    (lambda f: zero_shot_head(apply_lora(build_model("tiny-clip")), ["Cardiomegaly"]), ValueError,
     ["takes a CXRClassifier, got a PeftModel", "before apply_lora"]),
    (lambda f: export_onnx(build_model("tiny-resnet"), f/"a-file"/"model.onnx"), PermissionError,
     ["a-file", "choose a writable folder for the ONNX file"]),
    (lambda f: export_onnx(batch_branch_model(), f/"branch.onnx"), ValueError,
     ["the ONNX model's logits differ from torch's by up to", "nothing was written to", "branch.onnx", "Python branches"]),
    (lambda f: export_onnx(build_model("tiny-resnet"), f/"m.onnx", atol=-1), ValueError, ["atol must be >= 0", "atol=-1"]),
    (lambda f: export_onnx(build_model("tiny-resnet"), f/"m.onnx", batch=0), ValueError, ["batch >= 1", "batch=0"]),
    (lambda f: export_onnx(torch.nn.Linear(3, 2), f/"m.onnx"), TypeError, ["CXRClassifier", "got a Linear"]),
], ids=["unknown-name", "misspelt-xrv-name", "unknown-build", "xrv-weights-offline", "torchvision-weights-offline",
        "explicit-path-missing", "pickled-payload", "not-a-weights-file", "not-a-state-dict", "other-architecture",
        "other-shapes", "unknown-stage", "unknown-policy", "empty-head", "calibrated-without-thresholds",
        "lora-pattern-matches-nothing", "lora-on-a-depthwise-conv", "prototype-label-shape", "prototype-no-positive",
        "probe-one-class", "clip-weights-offline", "clip-weights-of-another-size", "clip-weights-of-another-family",
        "clip-folder-with-wrong-eos", "clip-eos-mismatch", "template-without-braces", "no-templates", "zero-shot-no-labels",
        "zero-shot-blank-label", "zero-shot-on-a-cnn", "zero-shot-on-a-peft-model", "onnx-folder-is-a-file",
        "onnx-disagrees-with-torch", "onnx-negative-atol", "onnx-empty-batch", "onnx-not-a-classifier"])
def test_bad_model_input_is_refused_naming_the_value(files, call, exc, named):
    refused(lambda: call(files), exc, *named)


def test_a_pickled_payload_never_runs(files, capsys):
    with pytest.raises(ValueError):
        read_weights(files/"evil.pt")
    assert "pickled code ran" not in capsys.readouterr().out


def test_a_failed_onnx_check_leaves_no_file(files):
    with pytest.raises(ValueError):
        export_onnx(batch_branch_model(), files/"branch.onnx")
    assert not (files/"branch.onnx").exists() and not list(files.glob(".branch-*"))
