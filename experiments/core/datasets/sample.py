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
then renamed). The cache is bounded: at most ``cache_sets`` localisation sets and
``cache_bytes`` bytes stay on disk, the least recently used evicted first (a set is "used" when
:func:`sample_dataset` opens it). An evicted set is rebuilt, identically, when one of its files
is read again. ``seed`` and ``num_images`` are bounded (:data:`MAX_SEED`,
:data:`MAX_LOCALISATION_IMAGES`): building 200 composites takes seconds and a few tens of MB.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .base import Dataset, DatasetFormatError, ObjectAnnotation, Sample, open_checked

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_LOCALISATION_IMAGES", "MAX_SEED", "SAMPLE_VERSION", "sample_cache_prune", "sample_check_options",
    "sample_dataset", "sample_is_cached", "sample_photos",
]

SAMPLE_VERSION = "sample-v1"
_CANVAS = 320
#: Most composites one localisation set may have (about 0.14 MB and 0.09 s each).
MAX_LOCALISATION_IMAGES = 200
#: Seeds run 0 … 2³¹ − 1.
MAX_SEED = 2**31 - 1
#: Default cache bounds: localisation sets kept, and their total size.
CACHE_SETS = 8
CACHE_BYTES = 256 * 2**20
#: A temporary build folder older than this was left by a process that died mid-build.
_STALE_BUILD_SECONDS = 3600


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


def _file_opener(cache_dir: Path, kind: str, seed: int, num_images: int, relative: str) -> Callable:
    """Open one file of the set, checked to lie in its folder; rebuild the set first if the
    cache evicted it meanwhile (the rebuild is deterministic, so the file is the same)."""
    def open_file():
        folder = _folder(cache_dir, kind, seed, num_images)
        if not (folder / relative).is_file():
            folder = _ensure(cache_dir, kind, seed, num_images)
        return open_checked(folder / relative, [folder], base=folder)

    return open_file


def _image_loader(opener: Callable) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from explain.core.imaging import load_image

        with opener() as file:
            return load_image(file)

    return load


def _mask_loader(opener: Callable) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        with opener() as file, Image.open(file) as image:
            return np.asarray(image.convert("L")) > 127

    return load


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def sample_check_options(*, seed: object, num_images: object) -> tuple[int, int]:
    """``(seed, num_images)`` of a localisation set if both are integers in range, else ``ValueError``."""
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}")
    if not _is_int(num_images) or not 1 <= num_images <= MAX_LOCALISATION_IMAGES:
        raise ValueError(f"num_images must be a whole number from 1 to {MAX_LOCALISATION_IMAGES}")
    return int(seed), int(num_images)


def sample_is_cached(kind: str, *, cache_dir: str | os.PathLike, seed: int = 0, num_images: int = 12) -> bool:
    """Whether :func:`sample_dataset` would open this set from disk rather than build it."""
    folder = _folder(Path(cache_dir).expanduser().resolve(), kind, seed, num_images)
    return (folder / "manifest.json").is_file()


def _size_of(folder: Path) -> int:
    total = 0
    for path, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(path, name)).st_size
            except OSError:
                pass
    return total


def sample_cache_prune(
    cache_dir: str | os.PathLike, *, max_sets: int = CACHE_SETS, max_bytes: int = CACHE_BYTES,
    keep: Path | None = None,
) -> list[str]:
    """Evict localisation sets, least recently used first, until at most ``max_sets`` remain
    and they take at most ``max_bytes``; ``keep`` (the set just opened) always stays. Build
    folders left by a process that died are removed too. Returns the evicted folders' names.

    Recency is the ``manifest.json`` modification time, which :func:`sample_dataset` refreshes
    on every open. The classification set (a few fixed photos) is never evicted.
    """
    cache = Path(cache_dir).expanduser().resolve()
    if not cache.is_dir():
        return []
    now = time.time()
    sets = []
    for entry in os.scandir(cache):
        if entry.name.startswith(".sample-") and entry.is_dir(follow_symlinks=False):
            if now - entry.stat(follow_symlinks=False).st_mtime > _STALE_BUILD_SECONDS:
                shutil.rmtree(entry.path, ignore_errors=True)
            continue
        if "-localisation-" not in entry.name or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            used = os.stat(os.path.join(entry.path, "manifest.json")).st_mtime
        except OSError:
            continue
        sets.append((used, Path(entry.path)))
    kept_count, kept_bytes, evicted = 0, 0, []
    keep = keep.resolve() if keep is not None else None
    for _, folder in sorted(sets, key=lambda item: (item[1] != keep, -item[0])):
        size = _size_of(folder)
        if folder == keep or (kept_count < max_sets and kept_bytes + size <= max_bytes):
            kept_count, kept_bytes = kept_count + 1, kept_bytes + size
            continue
        # Renamed first, so a reader sees the whole set or none of it.
        doomed = cache / f".sample-evicted-{folder.name}-{os.getpid()}"
        try:
            os.replace(folder, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        evicted.append(folder.name)
    if evicted:
        logger.info("sample cache %s: evicted %s (limits: %d sets, %d MB)", cache, evicted, max_sets, max_bytes // 2**20)
    return evicted


def sample_dataset(
    kind: str = "classification", *, cache_dir: str | os.PathLike, seed: int = 0, num_images: int = 12,
    cache_sets: int = CACHE_SETS, cache_bytes: int = CACHE_BYTES,
) -> Dataset:
    """The bundled sample set of ``kind`` (``"classification"`` or ``"localisation"``).

    ``seed`` (0 … :data:`MAX_SEED`) and ``num_images`` (1 … :data:`MAX_LOCALISATION_IMAGES`)
    shape the localisation composites (same values, same images). Opening a set marks it as
    recently used and prunes the cache to ``cache_sets`` sets and ``cache_bytes`` bytes
    (:func:`sample_cache_prune`). Class names are the 1000 ImageNet names.
    """
    if kind not in ("classification", "localisation"):
        raise ValueError(f"kind must be 'classification' or 'localisation', not {kind!r}")
    seed, num_images = sample_check_options(seed=seed, num_images=num_images)
    cache = Path(cache_dir).expanduser().resolve()
    folder = _ensure(cache, kind, seed, num_images)
    if kind == "localisation":
        try:
            os.utime(folder / "manifest.json")
        except OSError:
            pass
        sample_cache_prune(cache, max_sets=cache_sets, max_bytes=cache_bytes, keep=folder)
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
                _mask_loader(_file_opener(cache, kind, seed, num_images, o["mask"])) if o.get("mask") else None,
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
                loader=_image_loader(_file_opener(cache, kind, seed, num_images, entry["file"])),
                roots=(str(folder),),
                base=str(folder),
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
