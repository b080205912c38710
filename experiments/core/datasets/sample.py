"""A small bundled data set that works on a fresh install, with no download.

Two kinds, both labelled with ImageNet-1k class indices (torchvision order) that the
built-in EfficientNet-Lite0 recognises:

* ``"classification"``: photos shipped with scikit-image (and scikit-learn's ``china.jpg``
  when scikit-learn is installed), one label each — for insertion/deletion, perturbation
  and sanity checks;
* ``"localisation"``: composites made deterministically from a seed: objects cut from those
  photos (an ellipse inside a known crop) pasted at known places onto tinted texture
  backgrounds; every second image holds two objects of different classes (the
  class-discrimination case). Boxes and masks are exact, so the pointing game and the
  segmentation metric run on it.

The images are written once into ``cache_dir`` (PNG files plus ``manifest.json``) and read
from there afterwards; a half-written cache is never visible (written to a temporary folder,
then renamed).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .base import Dataset, DatasetFormatError, ObjectAnnotation, Sample

logger = logging.getLogger(__name__)

__all__ = ["SAMPLE_VERSION", "sample_photos", "sample_dataset"]

SAMPLE_VERSION = "sample-v1"
_CANVAS = 320


@dataclass(frozen=True)
class _Photo:
    name: str
    label: int                                  # ImageNet-1k index (torchvision order)
    crop: tuple[int, int, int, int]             # (x0, y0, x1, y1) of the object in the photo
    load: Callable[[], np.ndarray]
    #: Whether EfficientNet-Lite0 still recognises the crop when it is pasted small.
    pasteable: bool = True


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):                # stereo_motorcycle → (left, right, disparity)
            image = image[0]
        image = np.asarray(image)
        return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(name))

    return load


def _photos() -> list[_Photo]:
    photos = [
        # The cat is a tabby, but at a 224×224 resize the model calls it an Egyptian cat (285)
        # first and tabby (281) second; the label follows the model so accuracies mean something.
        _Photo("chelsea", 285, (20, 0, 420, 300), _skimage("chelsea")),
        _Photo("coffee", 967, (70, 15, 485, 390), _skimage("coffee")),              # espresso
        _Photo("camera", 872, (215, 120, 420, 512), _skimage("camera")),            # tripod
        _Photo("motorcycle", 665, (85, 85, 695, 455), _skimage("stereo_motorcycle")),  # moped
        _Photo("rocket", 657, (280, 110, 360, 420), _skimage("rocket"), pasteable=False),  # missile
    ]
    try:
        import sklearn.datasets  # noqa: F401  (optional: not a dependency of the project)

        photos.append(_Photo("china", 698, (0, 0, 640, 427), _sklearn("china.jpg"), pasteable=False))  # palace
    except ImportError:
        pass
    return photos


def sample_photos() -> dict[str, int]:
    """The photos available on this machine: name → ImageNet label."""
    return {p.name: p.label for p in _photos()}


def _ellipse(width: int, height: int) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, width - 1, height - 1), fill=255)
    return mask


def _background(rng: np.random.Generator) -> Image.Image:
    import skimage.data

    texture = np.asarray(getattr(skimage.data, rng.choice(["grass", "gravel", "brick"]))(), dtype=np.float32) / 255
    top, left = rng.integers(0, texture.shape[0] - _CANVAS + 1), rng.integers(0, texture.shape[1] - _CANVAS + 1)
    patch = texture[top:top + _CANVAS, left:left + _CANVAS]
    # Low contrast around a random tint, so the pasted objects are the salient content.
    tint = rng.uniform(0.3, 0.8, size=3)
    rgb = np.clip(tint[None, None, :] + 0.35 * (patch[:, :, None] - patch.mean()), 0, 1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(1.0))


def _cells(crops: list[Image.Image]) -> list[tuple[int, int, int, int]]:
    """Disjoint cells ``(x, y, w, h)``: the whole canvas for one object; for two, the left and
    right halves, or the top and bottom halves when both objects are wider than tall."""
    if len(crops) == 1:
        return [(0, 0, _CANVAS, _CANVAS)]
    half = _CANVAS // 2
    if all(c.width > c.height for c in crops):
        return [(0, 0, _CANVAS, half), (0, half, _CANVAS, half)]
    return [(0, 0, half, _CANVAS), (half, 0, half, _CANVAS)]


def _generate_localisation(out: Path, seed: int, num_images: int, photos: list[_Photo]) -> list[dict]:
    rng = np.random.default_rng(seed)
    photos = [p for p in photos if p.pasteable]
    crops = {p.name: Image.fromarray(p.load()).convert("RGB").crop(p.crop) for p in photos}
    entries = []
    for i in range(num_images):
        count = 1 if i % 2 == 0 else 2
        chosen = [photos[j] for j in rng.choice(len(photos), size=count, replace=False)]
        canvas = _background(rng)
        key = f"loc-{i:03d}"
        objects = []
        for j, (p, (cx, cy, cw, ch)) in enumerate(zip(chosen, _cells([crops[p.name] for p in chosen]))):
            crop = crops[p.name]
            scale = rng.uniform(0.8, 1.0) * min(cw / crop.width, ch / crop.height)
            image = crop.resize((max(8, round(crop.width * scale)), max(8, round(crop.height * scale))), Image.BILINEAR)
            x = cx + int(rng.integers(0, cw - image.width + 1))
            y = cy + int(rng.integers(0, ch - image.height + 1))
            alpha = _ellipse(*image.size)
            canvas.paste(image, (x, y), alpha)
            full = Image.new("L", (_CANVAS, _CANVAS), 0)
            full.paste(alpha, (x, y))
            mask_file = f"masks/{key}-{j}.png"
            full.point(lambda v: 255 if v >= 128 else 0).save(out / mask_file)
            objects.append({"label": p.label, "photo": p.name, "box": [x, y, x + image.width, y + image.height], "mask": mask_file})
        canvas.save(out / "images" / f"{key}.png")
        entries.append({"key": key, "file": f"images/{key}.png", "size": [_CANVAS, _CANVAS], "objects": objects})
    return entries


def _generate_classification(out: Path, photos: list[_Photo]) -> list[dict]:
    entries = []
    for p in photos:
        image = Image.fromarray(p.load()).convert("RGB")
        image.save(out / "images" / f"{p.name}.png")
        entries.append({"key": p.name, "file": f"images/{p.name}.png", "size": list(image.size),
                        "objects": [{"label": p.label, "photo": p.name, "box": list(p.crop), "mask": None}]})
    return entries


def _folder(cache_dir: Path, kind: str, seed: int, num_images: int) -> Path:
    if kind == "classification":
        return cache_dir / f"{SAMPLE_VERSION}-classification"
    return cache_dir / f"{SAMPLE_VERSION}-localisation-seed{seed}-n{num_images}"


def _ensure(cache_dir: Path, kind: str, seed: int, num_images: int) -> Path:
    target = _folder(cache_dir, kind, seed, num_images)
    if (target / "manifest.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".sample-", dir=cache_dir))
    try:
        (work / "images").mkdir()
        (work / "masks").mkdir()
        photos = _photos()
        if kind == "classification":
            entries = _generate_classification(work, photos)
        else:
            entries = _generate_localisation(work, seed, num_images, photos)
        manifest = {"version": SAMPLE_VERSION, "kind": kind, "seed": seed, "photos": [p.name for p in photos], "samples": entries}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        try:
            os.replace(work, target)
        except OSError:
            if not (target / "manifest.json").is_file():   # not a concurrent writer finishing first
                raise
        logger.info("wrote the %s sample set to %s", kind, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def _mask_loader(path: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 127

    return load


def sample_dataset(
    kind: str = "classification", *, cache_dir: str | os.PathLike, seed: int = 0, num_images: int = 12
) -> Dataset:
    """The bundled sample set of ``kind`` (``"classification"`` or ``"localisation"``).

    ``seed`` and ``num_images`` shape the localisation composites (same values, same images).
    Class names are the 1000 ImageNet names.
    """
    if kind not in ("classification", "localisation"):
        raise ValueError(f"kind must be 'classification' or 'localisation', not {kind!r}")
    if not isinstance(num_images, int) or not 1 <= num_images <= 1000:
        raise ValueError(f"num_images must be between 1 and 1000, not {num_images!r}")
    folder = _ensure(Path(cache_dir).expanduser().resolve(), kind, seed, num_images)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetFormatError(f"{folder}/manifest.json is unreadable ({error}); delete the folder to regenerate it") from None
    from explain.core.zoo import imagenet_class_names

    samples = []
    for entry in manifest["samples"]:
        objects = tuple(
            ObjectAnnotation(
                int(o["label"]),
                tuple(float(v) for v in o["box"]),
                False,
                _mask_loader(folder / o["mask"]) if o.get("mask") else None,
            )
            for o in entry["objects"]
        )
        samples.append(
            Sample(
                key=entry["key"],
                labels=tuple(dict.fromkeys(o.label for o in objects)),
                size=tuple(entry["size"]),
                objects=objects,
                path=str(folder / entry["file"]),
            )
        )
    # The photo list depends on whether scikit-learn is installed; the version says which.
    photos = "+".join(manifest.get("photos", []))
    version = f"{SAMPLE_VERSION} photos={photos}"
    if kind == "localisation":
        version += f" seed={seed} n={num_images}"
    return Dataset(
        name=f"sample-{kind}",
        version=version,
        root=str(folder),
        class_names=imagenet_class_names(),
        samples=tuple(samples),
    )
