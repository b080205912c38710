"""``explain.core`` as a library: no Django, no process-wide side effects at import, a face that
wraps any classifier, and an example that runs from a plain Python session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from explain.core import explain, methods_for, wrap_model

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("THP_MEM_ALLOC_ENABLE", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                "DJANGO_SETTINGS_MODULE")}
    environment.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=180)


def test_the_engine_imports_without_django():
    done = run_python(
        "import sys, explain.core, explain.core.custom, explain.core.zoo, explain.core.registry\n"
        "explain.core.method_keys()\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Freed memory kept or not, seen from page faults: without explain.cpu_memory.apply(), glibc maps
# the 16 MB block afresh, gives it back when freed, and the 12 MB that follows costs ~3000
# faults of fresh 4 kB pages (huge pages off so that every page counts).
SIDE_EFFECTS = """
import json, os, resource
import {module}
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(4 << 20); del x
before = faults()
y = torch.ones(3 << 20)
print(json.dumps({{"thp": os.environ.get("THP_MEM_ALLOC_ENABLE"), "faults": faults() - before}}))
"""


def test_importing_the_engine_changes_nothing_process_wide():
    done = run_python(SIDE_EFFECTS.format(module="explain.core"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["thp"] is None                  # PyTorch's allocator variable left unset
    assert result["faults"] >= 1000, result       # glibc's malloc thresholds not touched
    # the same probe sees the settings where an entry point applies them
    done = run_python(SIDE_EFFECTS.format(module="explain.cpu_memory; explain.cpu_memory.apply()"),
                      THP_MEM_ALLOC_ENABLE="0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["faults"] <= 4


def test_wrap_model_finds_family_layers_and_classes():
    resnet = wrap_model(torchvision.models.resnet18(weights=None, num_classes=7))
    assert (resnet.family, resnet.default_layers, resnet.num_classes) == ("cnn", {"cam": "layer4"}, 7)
    vgg = wrap_model(torchvision.models.vgg11(weights=None, num_classes=3), class_names=["a", "b", "c"])
    last_relu = [n for n, m in vgg.module.features.named_children() if isinstance(m, torch.nn.ReLU)][-1]
    assert vgg.default_layers == {"cam": f"features.{last_relu}"} and vgg.class_names == ("a", "b", "c")
    import timm

    vit = wrap_model(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, depth=2))
    assert (vit.family, vit.default_layers) == ("vit", {"tokens": "blocks.1.norm1"})
    assert "transformer_attribution" in methods_for(vit) and "gradcam" in methods_for(resnet)
    with pytest.raises(ValueError, match="class names"):
        wrap_model(torchvision.models.resnet18(weights=None, num_classes=2), class_names=["a"], num_classes=2)


def test_a_wrapped_model_is_explained_and_left_unchanged():
    torch.manual_seed(0)
    clf = wrap_model(torchvision.models.resnet18(weights=None, num_classes=5))
    before = {k: v.clone() for k, v in clf.module.state_dict().items()}
    [e] = explain(clf, torch.randn(1, 3, 96, 128), "gradcam", targets=2)
    assert e.saliency.shape == (96, 128) and e.target == 2
    assert torch.isfinite(e.saliency).all() and (e.saliency >= 0).all() and e.saliency.sum() > 0
    assert all(torch.equal(before[k], v) for k, v in clf.module.state_dict().items())


def test_the_example_script_runs_from_a_plain_session():
    done = subprocess.run([sys.executable, str(ROOT / "docs/examples/explain_torchvision.py")], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "default layers: {'cam': 'layer4'}"
    for key in ("gradcam", "layercam", "scorecam"):
        [line] = [line for line in lines if line.startswith(key + " ")]
        assert "map=(224, 224)" in line and "finite=True" in line
