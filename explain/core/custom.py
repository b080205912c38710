"""Users' own classifiers: any torchvision/timm classification architecture plus an uploaded weights file.

An upload is checked before anything is kept (:func:`inspect_upload`): the file must load
without unpickling code (``zoo.read_state_dict``), its keys and shapes must fit the
architecture (``zoo.fit_state_dict``), the class list must match the head, and one forward
pass must give finite logits. The number of classes is read off the head in the file.
Accepted weights are stored as ``.safetensors`` so later loads never touch pickle.

Default layers are found per family: the last block's ``norm1`` for a ViT, the ReLU after
the last convolution for VGG, and otherwise the last module whose output is still a
spatial ``B×K×h×w`` map (``h, w > 1``), found with one traced forward pass.

Example::

    info = inspect_upload("resnet18", Path("fine_tuned.pth"), class_names=voc_names)
    save_weights(info.state, Path("weights/abc.safetensors"))
    clf = custom_classifier(name="my resnet", architecture="resnet18",
                            weights_path=Path("weights/abc.safetensors"),
                            class_names=info.class_names, default_layers=info.default_layers,
                            preprocessing=info.preprocessing, checksum=info.sha256)
"""
from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from . import zoo
from .handle import IMAGENET_MEAN, IMAGENET_STD, Classifier
from .wrap import feature_layout_of, find_default_layers, model_family
from .zoo import WeightsInvalid

#: Most classes an uploaded head may have (a sanity bound on the class file and the head).
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class Architecture:
    name: str
    library: str          # "torchvision" or "timm"
    family: str           # "cnn" or "vit"
    builder: str          # the library's builder name


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        *(Architecture(n, "torchvision", "cnn", n) for n in (
            "vgg11", "vgg13", "vgg16", "vgg19", "vgg16_bn", "vgg19_bn",
            "resnet18", "resnet34", "resnet50", "resnet101",
            "densenet121", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny",
        )),
        Architecture("efficientnet_lite0", "timm", "cnn", "efficientnet_lite0"),
        *(Architecture(n, "timm", "vit", n) for n in (
            "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "deit_small_patch16_224",
        )),
    )
}


#: How an architecture name may look (a builder name, optionally timm's ``.pretrained_tag``).
ARCHITECTURE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}(\.[A-Za-z0-9_]{1,60})?")


@functools.lru_cache(maxsize=1024)
def get_architecture(name: str) -> Architecture:
    """The architecture called ``name``: one of :data:`ARCHITECTURES` (the suggested list), or
    any classification model ``torchvision.models`` or ``timm.create_model`` builds by name.

    The family of the others is read off the built module (:func:`wrap.model_family`): ``""`` here.
    """
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if not isinstance(name, str) or not ARCHITECTURE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an architecture name (letters, digits and underscores, e.g. 'convnext_tiny')")
    import torchvision.models as tvm

    if name in tvm.list_models(module=tvm):      # classification builders only
        return Architecture(name, "torchvision", "", name)
    import timm

    if timm.is_model(name):
        return Architecture(name, "timm", "", name)
    raise ValueError(
        f"unknown architecture {name!r}: give a classification model name that timm.create_model or "
        f"torchvision.models builds (for example {', '.join(sorted(ARCHITECTURES)[:6])}, …)"
    )


def family_of(name: str, module: nn.Module) -> str:
    """``"cnn"`` or ``"vit"``: the listed family, else what the module looks like."""
    return get_architecture(name).family or model_family(module)


def build_module(name: str, num_classes: int) -> nn.Module:
    """The architecture with random weights and a ``num_classes`` head (nothing is downloaded)."""
    arch = get_architecture(name)
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"a classifier needs between 1 and {MAX_CLASSES} classes, not {num_classes}")
    if arch.library == "timm":
        import timm

        return timm.create_model(arch.builder, pretrained=False, num_classes=num_classes)
    import torchvision.models as tvm

    return tvm.get_model(arch.builder, weights=None, num_classes=num_classes)


def preprocessing_of(name: str, module: nn.Module) -> dict:
    """Mean, std, input and resize size: timm's pretrained config, ImageNet's for torchvision."""
    arch = get_architecture(name)
    mean, std, size, crop_pct = IMAGENET_MEAN, IMAGENET_STD, 224, 0.875
    if arch.library == "timm":
        cfg = getattr(module, "pretrained_cfg", None) or {}
        mean = tuple(cfg.get("mean", mean))
        std = tuple(cfg.get("std", std))
        size = int(cfg.get("input_size", (3, size, size))[-1])
        crop_pct = float(cfg.get("crop_pct", crop_pct))
    return {"mean": list(mean), "std": list(std), "input_size": size, "resize_size": int(round(size / crop_pct))}


def _head_key(module: nn.Module) -> str:
    """State-dict key of the final linear layer's weight (its rows are the classes)."""
    last = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(module).__name__} has no linear classification head")
    return f"{last}.weight"


def default_layers_of(name: str, module: nn.Module, input_size: int) -> dict[str, str]:
    """The layer per role the explainers use unless a user picks another (see module docstring)."""
    return find_default_layers(module, family_of(name, module), input_size, label=name)


@dataclass(frozen=True, eq=False)
class UploadInfo:
    """What an accepted upload records: head size, class names, layers, preprocessing, weights."""

    architecture: str
    family: str
    num_classes: int
    class_names: tuple[str, ...]
    default_layers: dict[str, str]
    layers: list[str]
    preprocessing: dict
    state: dict[str, torch.Tensor]


def parse_class_names(text: str) -> list[str]:
    """One class name per line; blank lines at the end are ignored, blank lines inside are not allowed."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError("the class-names file is empty; put one class name per line")
    blank = [i + 1 for i, line in enumerate(lines) if not line]
    if blank:
        raise ValueError(f"the class-names file has empty lines (line {blank[0]}); put one class name per line")
    if len(lines) > MAX_CLASSES:
        raise ValueError(f"the class-names file has {len(lines)} lines; at most {MAX_CLASSES} classes are supported")
    return lines


def inspect_upload(architecture: str, weights_path: Path, class_names: Sequence[str] | None = None) -> UploadInfo:
    """Check an uploaded weights file against ``architecture``; raise ``WeightsInvalid``/``ValueError`` saying why.

    The head size is read from the file; ``class_names`` (if given) must have that length,
    otherwise the classes are called "class 0", "class 1", …
    """
    get_architecture(architecture)
    state = zoo.read_state_dict(Path(weights_path))
    probe = build_module(architecture, 1000)
    head = _head_key(probe)
    if head not in state:
        # Fitting reports the missing/unexpected keys in detail.
        zoo.fit_state_dict(probe, state)
        raise WeightsInvalid(f"the weights have no classification head {head!r}")
    num_classes = int(state[head].shape[0]) if state[head].dim() == 2 else -1
    if not 1 <= num_classes <= MAX_CLASSES:
        raise WeightsInvalid(f"the head {head!r} has shape {tuple(state[head].shape)}, not classes × features")
    module = probe if num_classes == 1000 else build_module(architecture, num_classes)
    fitted = zoo.fit_state_dict(module, state)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ValueError(
                f"the class-names file lists {len(class_names)} classes but the model's head has "
                f"{num_classes} outputs; give one name per output, in order"
            )
    else:
        class_names = [f"class {i}" for i in range(num_classes)]
    try:
        module.load_state_dict(fitted)
    except RuntimeError as error:
        raise WeightsInvalid(f"PyTorch refused the weights: {str(error).splitlines()[0][:300]}") from None
    module.eval()
    preprocessing = preprocessing_of(architecture, module)
    size = preprocessing["input_size"]
    with torch.no_grad():
        logits = module(torch.zeros(1, 3, size, size))
    if tuple(logits.shape) != (1, num_classes):
        raise WeightsInvalid(f"a forward pass gave logits of shape {tuple(logits.shape)}, expected (1, {num_classes})")
    if not torch.isfinite(logits).all():
        raise WeightsInvalid("a forward pass on a blank image gave NaN or infinite logits; the weights are broken")
    return UploadInfo(
        architecture=architecture,
        family=family_of(architecture, module),
        num_classes=num_classes,
        class_names=tuple(class_names),
        default_layers=default_layers_of(architecture, module, size),
        layers=[n for n, _ in module.named_modules() if n],
        preprocessing=preprocessing,
        state={k: v.detach().contiguous() for k, v in fitted.items()},
    )


def save_weights(state: Mapping[str, torch.Tensor], path: Path) -> str:
    """Write ``state`` as ``.safetensors`` at ``path`` (atomically); return its sha256."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
    return zoo.sha256_of(path)


def architecture_info(name: str) -> dict:
    """Layers, default layers and preprocessing of an architecture (random weights, 1000 classes)."""
    module = build_module(name, 1000).eval()
    pre = preprocessing_of(name, module)
    return {
        "family": family_of(name, module),
        "layers": [n for n, _ in module.named_modules() if n],
        "default_layers": default_layers_of(name, module, pre["input_size"]),
        "preprocessing": pre,
    }


_cache: dict[tuple[str, str, str], Classifier] = {}
_cache_lock = threading.Lock()


def custom_classifier(
    *,
    name: str,
    architecture: str,
    weights_path: Path,
    class_names: Sequence[str],
    default_layers: Mapping[str, str],
    preprocessing: Mapping,
    checksum: str,
    device: torch.device | str | None = None,
) -> Classifier:
    """The uploaded model as a :class:`Classifier`, loaded once per process, checksum and device.

    Raises ``WeightsMissing`` when the file is gone and ``WeightsInvalid`` when it changed
    (its sha256 differs from ``checksum``) or no longer fits.
    """
    device = torch.device(device) if device is not None else zoo.default_device()
    key = (str(weights_path), checksum, str(device))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    path = Path(weights_path)
    if not path.is_file():
        raise zoo.WeightsMissing(f"the weights file of {name!r} is missing on this machine ({path.name}); upload it again")
    actual = zoo.sha256_of(path)
    if checksum and actual != checksum:
        raise WeightsInvalid(f"the weights file of {name!r} changed on disk (sha256 {actual[:12]}…, expected {checksum[:12]}…)")
    module = build_module(architecture, len(class_names))
    module.load_state_dict(zoo.fit_state_dict(module, zoo.read_state_dict(path)))
    zoo.ready_for_inference(module, device)
    classifier = Classifier(
        name=name,
        module=module,
        family=family_of(architecture, module),
        class_names=tuple(class_names),
        default_layers=dict(default_layers),
        mean=tuple(preprocessing.get("mean", IMAGENET_MEAN)),
        std=tuple(preprocessing.get("std", IMAGENET_STD)),
        input_size=int(preprocessing.get("input_size", 224)),
        resize_size=int(preprocessing.get("resize_size", 256)),
        weights_checksum=actual,
        feature_layout=feature_layout_of(module, family_of(architecture, module)),
    )
    with _cache_lock:
        _cache[key] = classifier
    return classifier
