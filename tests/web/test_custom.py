"""Users' own models in the core (no database): architectures, default layers, upload checks."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from explain.core import custom, zoo
from explain.core.zoo import WeightsInvalid

from .conftest import state_dict_bytes


def _last_spatial_layer_by_hand(module: nn.Module, size: int = 224) -> str:
    """Independent check: walk the forward pass with one hook per leaf and container, keep the last 4-D map."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.append((n, tuple(o.shape)))
                                     if isinstance(o, torch.Tensor) else None)
             for n, m in module.named_modules() if n]
    with torch.no_grad():
        module.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return [n for n, shape in seen if len(shape) == 4 and shape[-1] > 1 and shape[-2] > 1][-1]


@pytest.mark.parametrize("name, expected", [
    ("resnet18", "layer4"),
    ("vgg11", "features.19"),                 # ReLU after the last conv (features.18), before the last pool
    ("efficientnet_lite0", "bn2"),            # what the zoo uses for the built-in
    ("vit_tiny_patch16_224", "blocks.11.norm1"),
])
def test_default_layers(name, expected):
    module = custom.build_module(name, 10).eval()
    layers = custom.default_layers_of(name, module, 224)
    assert list(layers.values()) == [expected]
    assert expected in dict(module.named_modules())
    if custom.get_architecture(name).family == "cnn" and not name.startswith("vgg"):
        assert expected == _last_spatial_layer_by_hand(module)


def test_builtin_default_layer_agrees_with_zoo():
    module = custom.build_module("efficientnet_lite0", 1000)
    assert custom.default_layers_of("efficientnet_lite0", module, 224) == dict(zoo.get_spec("efficientnet_lite0").default_layers)


def test_preprocessing_from_library():
    vit = custom.preprocessing_of("vit_tiny_patch16_224", custom.build_module("vit_tiny_patch16_224", 10))
    assert vit["mean"] == [0.5, 0.5, 0.5] and vit["input_size"] == 224 and vit["resize_size"] == round(224 / 0.9)
    tv = custom.preprocessing_of("resnet18", custom.build_module("resnet18", 10))
    assert tv == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": 224, "resize_size": 256}


@pytest.mark.parametrize("text, expected", [
    ("cat\ndog\n", ["cat", "dog"]),
    ("cat\r\ndog\r\n\r\n", ["cat", "dog"]),
    ("  aeroplane \nbicycle", ["aeroplane", "bicycle"]),
])
def test_parse_class_names(text, expected):
    assert custom.parse_class_names(text) == expected


@pytest.mark.parametrize("text", ["", "\n\n", "cat\n\ndog\n"])
def test_parse_class_names_refuses(text):
    with pytest.raises(ValueError, match="one class name per line"):
        custom.parse_class_names(text)


def test_inspect_reads_head_size_and_round_trips(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(state_dict_bytes("mobilenet_v2", 7, seed=3))
    info = custom.inspect_upload("mobilenet_v2", path)
    assert info.num_classes == 7 and info.class_names[0] == "class 0" and len(info.class_names) == 7
    saved = tmp_path / "kept.safetensors"
    checksum = custom.save_weights(info.state, saved)
    assert checksum == zoo.sha256_of(saved)
    clf = custom.custom_classifier(name="m", architecture="mobilenet_v2", weights_path=saved,
                                   class_names=info.class_names, default_layers=info.default_layers,
                                   preprocessing=info.preprocessing, checksum=checksum, device="cpu")
    reference = custom.build_module("mobilenet_v2", 7)
    reference.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(clf.module(x), reference.eval()(x), atol=1e-5)
    assert clf.family == "cnn" and clf.default_layer("cam") == "features"
    assert all(not p.requires_grad for p in clf.module.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in clf.module.parameters() if p.dim() == 4)


def test_changed_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(state_dict_bytes("mobilenet_v2", 3, fmt="safetensors"))
    checksum = zoo.sha256_of(path)
    path.write_bytes(state_dict_bytes("mobilenet_v2", 3, seed=9, fmt="safetensors"))
    with pytest.raises(WeightsInvalid, match="changed on disk"):
        custom.custom_classifier(name="m", architecture="mobilenet_v2", weights_path=path,
                                 class_names=["a", "b", "c"], default_layers={"cam": "features"},
                                 preprocessing={}, checksum=checksum, device="cpu")
    with pytest.raises(zoo.WeightsMissing):
        custom.custom_classifier(name="m", architecture="mobilenet_v2", weights_path=tmp_path / "gone.safetensors",
                                 class_names=["a"], default_layers={}, preprocessing={}, checksum="", device="cpu")


def test_non_finite_weights_are_refused(tmp_path):
    state = custom.build_module("mobilenet_v2", 3).state_dict()
    state["classifier.1.bias"] = torch.full_like(state["classifier.1.bias"], float("nan"))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = tmp_path / "nan.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(WeightsInvalid, match="NaN"):
        custom.inspect_upload("mobilenet_v2", path)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'alexnet9'.*timm.create_model or torchvision.models"):
        custom.get_architecture("alexnet9")
    with pytest.raises(ValueError, match="not an architecture name"):
        custom.get_architecture("../etc/passwd")


def test_any_timm_or_torchvision_classifier_is_an_architecture():
    # not in the suggested list, built by name: family read off the module
    assert custom.get_architecture("regnet_y_400mf").library == "torchvision"
    assert custom.get_architecture("convnext_atto").library == "timm"
    module = custom.build_module("convnext_atto", 3)
    assert custom.family_of("convnext_atto", module) == "cnn"
    assert custom.default_layers_of("convnext_atto", module, 224) == {"cam": "norm_pre"}
