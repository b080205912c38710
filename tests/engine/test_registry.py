"""Registry, parameters and the hook session."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from explain.core.engine import explain
from explain.core.hooks import HookSession, count_hooks
from explain.core.methods.base import Method, Param
from explain.core.registry import get_method, get_method_class, method_keys, methods_for, register_method


def test_duplicate_keys_and_aliases_raise():
    with pytest.raises(ValueError, match="already registered"):
        @register_method("gradcam")
        class Again(Method):
            pass
    with pytest.raises(ValueError, match="already registered"):
        @register_method("a-fresh-key-for-the-test", aliases=("gradcam",))
        class Aliased(Method):
            pass
    assert "a-fresh-key-for-the-test" not in method_keys()
    with pytest.raises(TypeError):
        register_method("not-a-method")(object)


def test_lookup_and_families():
    assert get_method("gradcam").key == "gradcam"
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of"):
        get_method("nope")
    with pytest.raises(ValueError, match="family"):
        methods_for("rnn")
    for key in method_keys():
        cls = get_method_class(key)
        assert cls.families <= {"cnn", "vit"} and cls.families
        json.dumps(cls.schema())          # the web form description is JSON-able


@pytest.mark.parametrize("param,value,expected", [
    (Param("n", "int", 3, minimum=1), "7", 7),
    (Param("n", "int", 3), 4.0, 4),
    (Param("f", "float", 0.5, maximum=1), "0.25", 0.25),
    (Param("b", "bool", True), "off", False),
    (Param("b", "bool", False), 1, True),
    (Param("c", "choice", "bilinear", choices=("bilinear", "bicubic")), "bicubic", "bicubic"),
    (Param("c", "choice", 3, choices=(3, 5)), "5", 5),
    (Param("s", "ints", (1, 2)), "3, 4,5", (3, 4, 5)),
])
def test_param_coercion(param, value, expected):
    assert param.validate(value) == expected


@pytest.mark.parametrize("param,value,message", [
    (Param("n", "int", 3, minimum=1), 0, ">= 1"),
    (Param("n", "int", 3), 2.5, "integer"),
    (Param("n", "int", 3), True, "boolean"),
    (Param("f", "float", 0.5), "nan", "finite"),
    (Param("b", "bool", True), "maybe", "true/false"),
    (Param("c", "choice", "a", choices=("a", "b")), "z", "one of"),
    (Param("s", "ints", (1,)), "", "at least one"),
])
def test_param_errors_name_the_parameter(param, value, message):
    with pytest.raises(ValueError, match=f"parameter '{param.name}'.*{message}"):
        param.validate(value)


def test_resolve_params_fills_defaults_and_resolves_layers(cnn, vit):
    scorecam = get_method_class("scorecam")
    assert scorecam.resolve_params(cnn, {"baseline": "false"}) == {"layer": "relu2", "baseline": False, "batch_size": 8}
    assert get_method_class("gradcam").resolve_params(vit, {})["layer"] == "blocks.1.norm1"
    with pytest.raises(ValueError, match="no parameter"):
        scorecam.resolve_params(cnn, {"baselin": True})
    with pytest.raises(ValueError, match="has no layer"):
        scorecam.resolve_params(cnn, {"layer": "conv9"})
    schema = get_method_class("gradcam").schema(cnn)
    [layer] = schema["params"]
    assert layer["default"] == "relu2" and "conv1" in layer["choices"]


@pytest.mark.parametrize("key", ["rise", "scorecam", "groupcam", "msgcam", "cameras"])
def test_batch_size_defaults_to_the_device_and_is_recorded(cnn, key):
    method = get_method_class(key)
    [param] = [p for p in method.params if p.name == "batch_size"]
    assert param.to_schema()["default"] is None and "empty: 8 on a CPU (or the model's own number), 64 on a GPU" in param.help
    assert cnn.device.type == "cpu"
    assert method.resolve_params(cnn, {})["batch_size"] == 8
    assert method.resolve_params(cnn, {"batch_size": "9"})["batch_size"] == 9
    assert method.resolve_params(cnn, {"batch_size": None})["batch_size"] == 8
    # on an accelerator the default is a large batch; a meta-device copy stands in for one
    meta = dataclasses.replace(cnn, module=copy.deepcopy(cnn.module).to("meta"))
    assert method.resolve_params(meta, {})["batch_size"] == 64
    # a model that names its own CPU number gets it on a CPU only
    own = dataclasses.replace(cnn, cpu_batch_size=3)
    assert method.resolve_params(own, {})["batch_size"] == 3
    assert method.resolve_params(dataclasses.replace(meta, cpu_batch_size=3), {})["batch_size"] == 64
    [e] = explain(cnn, torch.randn(1, 3, 32, 32), key, params={"masks": 8} if key == "rise" else {})
    assert e.manifest["params"]["batch_size"] == 8


@pytest.mark.parametrize("key", ["lrp", "partial_lrp", "transformer_attribution", "attention_rollout", "gradient_rollout"])
def test_methods_keeping_every_layer_take_8_images_per_chunk_on_a_cpu_and_32_elsewhere(cnn, key):
    method = get_method_class(key)
    [param] = [p for p in method.params if p.name == "batch_size"]
    assert param.to_schema()["default"] is None and "empty: 8 on a CPU, 32 on a GPU" in param.help
    meta = dataclasses.replace(cnn, module=copy.deepcopy(cnn.module).to("meta"))
    # the model's own CPU number is for perturbation passes, not for chunks that keep every layer
    for classifier, expected in [(cnn, 8), (dataclasses.replace(cnn, cpu_batch_size=3), 8), (meta, 32)]:
        assert param.default_for(classifier) == expected
    if "cnn" in method.families:
        assert method.resolve_params(cnn, {})["batch_size"] == 8
        assert method.resolve_params(meta, {})["batch_size"] == 32
        assert method.resolve_params(cnn, {"batch_size": "3"})["batch_size"] == 3
        [e] = explain(cnn, torch.randn(1, 3, 32, 32), key)
        assert e.manifest["params"]["batch_size"] == 8


def test_hook_session_restores_state_and_propagates_errors(cnn):
    module = cnn.module
    flags = [p.requires_grad for p in module.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        with HookSession(module) as session:
            session.freeze_parameters()
            session.forward_hook(module.conv1, lambda m, i, o: None)
            module.train()
            assert count_hooks(module) == 1
            raise RuntimeError("boom")
    assert count_hooks(module) == 0
    assert not any(m.training for m in module.modules())
    assert [p.requires_grad for p in module.parameters()] == flags
    with torch.no_grad():
        module(torch.randn(1, 3, 32, 32))


def test_hook_session_restores_mixed_state_and_shared_parameters():
    # Mixed flags, a parameter shared by two modules, gradients present and absent: all come
    # back as they were, each parameter once, whatever happened inside.
    torch.manual_seed(0)
    first, second = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    second.weight = first.weight
    model = torch.nn.Sequential(first, torch.nn.ReLU(), second, torch.nn.Dropout())
    model.eval()
    model[3].train()
    first.bias.requires_grad_(False)
    old_grad = torch.ones(3, 3)
    first.weight.grad = old_grad
    before = [(m.training) for m in model.modules()]
    with HookSession(model) as session:
        assert len(session._params) == len(list(model.parameters())) == 3
        session.freeze_parameters()
        assert not any(p.requires_grad for p in model.parameters())
        model.train()
        first.weight.grad = torch.zeros(3, 3)
        second.bias.grad = torch.zeros(3)
    assert [m.training for m in model.modules()] == before
    assert [p.requires_grad for p in model.parameters()] == [True, False, True]
    assert first.weight.grad is old_grad and second.weight.grad is old_grad
    assert second.bias.grad is None


def test_a_method_module_imported_first_loads_cleanly():
    # A fresh interpreter importing one built-in method module before anything else must not
    # trip over a half-initialised sibling (cameras imports msgcam).
    import subprocess
    import sys

    code = ("import explain.core.methods.msgcam\n"
            "from explain.core.registry import get_method_class\n"
            "print(get_method_class('cameras').key, get_method_class('msgcam').key)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cameras", "msgcam"]
