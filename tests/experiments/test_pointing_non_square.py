"""The pointing game end to end on non-square data sets (PASCAL VOC 2007 and COCO 2014 layouts).

The pointing protocols resize keep-aspect (shorter side 224, nothing cropped), so landscape and
portrait photos reach the model as non-square inputs. Each run goes through the real services
(submission, shards, records, aggregation); the stored records are checked against a
recomputation that shares nothing with the metric code: the image is resized here with PIL,
``explain()`` is called on the non-square input, the map is brought back to the original size
and the hit is decided by brute force over the class's ground-truth pixels.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from pycocotools import mask as coco_mask

from experiments import services
from experiments.core.datasets import VOC_CLASSES
from experiments.models import Experiment, Record
from explain import services as explain_services
from explain.core.custom import build_module
from explain.core.engine import explain

pytestmark = pytest.mark.django_db

SHORT_SIDE = 224      # both pointing protocols: shorter side 224, keep the aspect ratio
TOLERANCE = 15        # pixels, strictly
TOP_K = 100
POINTING = ["torchray-pointing-v1", "thesis-pointing-top100-v1"]
BACKGROUND = (118, 136, 150)


# ----------------------------------------------------------------------------- fixtures

def _photo(kind: str, width: int, height: int) -> Image.Image:
    """A real photo (skimage's cat or coffee cup) squeezed into a ``width × height`` box."""
    from skimage import data

    array = data.chelsea() if kind == "cat" else data.coffee()
    return Image.fromarray(array).resize((width, height), Image.BILINEAR)


def _upload(owner, name: str, architecture: str, class_names, seed: int = 0):
    """A seeded random-weights model uploaded as a user would (a safetensors state_dict)."""
    from safetensors.torch import save

    torch.manual_seed(seed)
    state = build_module(architecture, len(class_names)).state_dict()
    weights = SimpleUploadedFile("weights.safetensors", save({k: v.contiguous() for k, v in state.items()}))
    return explain_services.classifier_model_upload(
        owner=owner, name=name, architecture=architecture, weights=weights,
        class_names_text="\n".join(class_names) + "\n")


# VOC boxes as the XML writes them: 1-based inclusive (xmin, ymin, xmax, ymax).
VOC_IMAGES = {
    # landscape, larger than the model input on both sides (the map is upsampled back)
    "000011": (320, 240, [("cat", 0, "cat", (31, 41, 170, 200)),
                          ("cat", 1, "cat", (251, 21, 300, 70)),       # difficult, but cat has a plain box too
                          ("bottle", 1, "cup", (201, 151, 230, 230))]),  # only difficult bottles: skipped
    # portrait, narrower than the model input (the map is downsampled back)
    "000012": (180, 300, [("dog", 0, "cup", (11, 151, 170, 290)),
                          ("cat", 0, "cat", (21, 11, 120, 110))]),
}
VOC_XML = """<annotation><folder>VOC2007</folder><filename>{id}.jpg</filename>
<source><database>The VOC2007 Database</database></source>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size><segmented>0</segmented>
{objects}</annotation>
"""
VOC_OBJECT = """<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>
<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>
"""


def write_voc(root):
    """``VOCdevkit/VOC2007`` with Annotations, ImageSets/Main/test.txt and JPEGImages."""
    base = root / "VOCdevkit" / "VOC2007"
    for folder in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (base / folder).mkdir(parents=True)
    for image_id, (width, height, objects) in VOC_IMAGES.items():
        image = Image.new("RGB", (width, height), BACKGROUND)
        body = ""
        for name, difficult, photo, (x0, y0, x1, y1) in objects:
            image.paste(_photo(photo, x1 - x0 + 1, y1 - y0 + 1), (x0 - 1, y0 - 1))
            body += VOC_OBJECT.format(name=name, d=difficult, x0=x0, y0=y0, x1=x1, y1=y1)
        image.save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
        (base / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(id=image_id, w=width, h=height, objects=body))
    (base / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in VOC_IMAGES))
    return root / "VOCdevkit"


def voc_truth():
    """``[(image_id, class_id, mask H×W, ebp_difficult)]`` from the fixture's own boxes: the union
    of every box of the class (difficult ones too), classes with only difficult boxes left out."""
    pairs = []
    for image_id, (width, height, objects) in VOC_IMAGES.items():
        names = sorted({o[0] for o in objects}, key=VOC_CLASSES.index)
        for name in names:
            boxes = [o for o in objects if o[0] == name]
            if all(o[1] for o in boxes):
                continue
            mask = np.zeros((height, width), dtype=bool)
            for _, _, _, (x0, y0, x1, y1) in boxes:
                mask[y0 - 1:y1, x0 - 1:x1] = True
            difficult = mask.sum() < mask.size / 4 and len(names) > 1
            pairs.append((image_id, VOC_CLASSES.index(name), mask, difficult))
    return pairs


COCO_CATEGORIES = [{"id": 47, "name": "cup", "supercategory": "kitchen"},
                   {"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 17, "name": "cat", "supercategory": "animal"}]


def _ellipse(cx, cy, rx, ry, n=24):
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [float(v) for a in angles for v in (cx + rx * np.cos(a), cy + ry * np.sin(a))]


def write_coco(root):
    """``val2014/COCO_val2014_*.jpg`` and ``annotations/instances_val2014.json`` (polygons and
    a crowd RLE), two non-square images of opposite orientation."""
    images = [
        {"id": 139, "file_name": "COCO_val2014_000000000139.jpg", "width": 300, "height": 200},
        {"id": 285, "file_name": "COCO_val2014_000000000285.jpg", "width": 150, "height": 240},
    ]
    crowd = np.zeros((200, 300), dtype=np.uint8)
    crowd[20:90, 200:280] = 1
    rle = coco_mask.encode(np.asfortranarray(crowd))
    rle["counts"] = rle["counts"].decode("ascii")
    annotations = [
        {"id": 1, "image_id": 139, "category_id": 17, "iscrowd": 0, "bbox": [20.0, 60.0, 140.0, 120.0],
         "area": 13000.0, "segmentation": [_ellipse(90, 120, 70, 60)]},
        {"id": 2, "image_id": 139, "category_id": 1, "iscrowd": 1, "bbox": [200.0, 20.0, 80.0, 70.0],
         "area": 5600.0, "segmentation": rle},
        {"id": 3, "image_id": 285, "category_id": 47, "iscrowd": 0, "bbox": [25.0, 120.0, 100.0, 100.0],
         "area": 7500.0, "segmentation": [_ellipse(75, 170, 50, 50)]},
    ]
    # photos pasted over the annotated regions so the maps have structure to find
    pictures = {139: [("cat", (20, 60, 160, 180)), ("cup", (200, 20, 280, 90))], 285: [("cup", (25, 120, 125, 220))]}
    (root / "val2014").mkdir(parents=True)
    for info in images:
        image = Image.new("RGB", (info["width"], info["height"]), BACKGROUND)
        for photo, (x0, y0, x1, y1) in pictures[info["id"]]:
            image.paste(_photo(photo, x1 - x0, y1 - y0), (x0, y0))
        image.save(root / "val2014" / info["file_name"], quality=95)
    data = {"info": {"description": "COCO 2014 Dataset"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": COCO_CATEGORIES}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    return root / "val2014", root / "annotations" / "instances_val2014.json", data


def coco_truth(data):
    """``[(image_key, class_id, mask, ebp_difficult)]``: class = position of the category id in
    sorted order; mask = union of the class's instances decoded by pycocotools itself."""
    order = sorted(c["id"] for c in data["categories"])
    pairs = []
    for info in sorted(data["images"], key=lambda i: i["id"]):
        h, w = info["height"], info["width"]
        anns = [a for a in data["annotations"] if a["image_id"] == info["id"]]
        classes = sorted({order.index(a["category_id"]) for a in anns})
        for class_id in classes:
            mask = np.zeros((h, w), dtype=bool)
            for a in anns:
                if order.index(a["category_id"]) != class_id:
                    continue
                seg = a["segmentation"]
                rles = coco_mask.frPyObjects(seg, h, w) if isinstance(seg, list) else [seg]
                for r in rles:
                    mask |= coco_mask.decode(r).astype(bool)
            difficult = mask.sum() < mask.size / 4 and len(classes) > 1
            pairs.append((info["file_name"][:-4], class_id, mask, difficult))
    return pairs


# ----------------------------------------------------------------------------- recomputation

def keep_aspect(image: Image.Image) -> torch.Tensor:
    """Shorter side to 224, longer side ``int(224 · long / short)``, PIL bilinear: ``3×H×W`` in [0, 1]."""
    width, height = image.size
    if width <= height:
        size = (SHORT_SIDE, int(SHORT_SIDE * height / width))
    else:
        size = (int(SHORT_SIDE * width / height), SHORT_SIDE)
    array = np.asarray(image.convert("RGB").resize(size, Image.BILINEAR), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def brute_force_scores(saliency: torch.Tensor, mask: np.ndarray) -> tuple[tuple[int, int], float, float]:
    """``((x, y) of the first maximum, hit 0/1, top-100 fraction)`` of the map at the mask's size."""
    height, width = mask.shape
    big = F.interpolate(saliency[None, None].float(), size=(height, width), mode="bilinear",
                        align_corners=False)[0, 0].numpy()
    flat = big.reshape(-1)
    ys, xs = np.nonzero(mask)

    def near(index: int) -> bool:
        y, x = divmod(int(index), width)
        return bool(np.min((ys - y) ** 2 + (xs - x) ** 2) < TOLERANCE ** 2)

    first = int(np.flatnonzero(flat == flat.max())[0])
    # highest values first, ties in raster order
    top = np.lexsort((np.arange(flat.size), -flat))[:TOP_K]
    return (first % width, first // width), float(near(first)), float(np.mean([near(i) for i in top]))


def expected_scores(run, classifier, image: Image.Image, mask: np.ndarray, class_id: int, method: dict):
    """Recompute one pair: the map from ``explain()`` on the non-square input (or the baseline)."""
    pixels = keep_aspect(image)
    if method.get("baseline"):
        saliency = torch.from_numpy(services.baseline_map(method["key"], *pixels.shape[-2:], seed=0))
    else:
        x = classifier.normalize(pixels[None])
        enhance = (method["enhance_params"] or True) if method["enhance"] else None
        [result] = explain(classifier, x, method["key"], targets=[class_id], params=method["params"],
                           enhance=enhance, seed=run.seed)
        saliency = result.saliency
    assert tuple(saliency.shape) == tuple(pixels.shape[-2:]), method["key"]
    return brute_force_scores(saliency, mask)


def check_run(run, truth, images, recompute: set[str]) -> dict:
    """Every record ok and one per (pair, method, protocol); recomputed scores equal the stored
    ones for the methods in ``recompute``; the aggregate equals the mean of per-class rates.
    Returns ``{protocol: {method label: score}}``."""
    assert run.status == Experiment.Status.DONE, run.error
    failed = list(Record.objects.filter(experiment=run, ok=False).values_list("image_key", "method_key", "protocol", "error"))
    assert not failed, f"failed records: {failed}"
    records = {(r.image_key, r.method_slot, r.protocol, r.class_id): r for r in Record.objects.filter(experiment=run)}
    expected_keys = {(key, m["slot"], p, c) for key, c, _, _ in truth for m in run.methods for p in POINTING}
    assert set(records) == expected_keys and len(records) == len(truth) * len(run.methods) * len(POINTING)

    classifier = explain_services.classifier_load(model=run.model)
    scores: dict = {}
    for method in run.methods:
        if method["key"] not in recompute:
            continue
        for key, class_id, mask, difficult in truth:
            point, hit, fraction = expected_scores(run, classifier, images[key], mask, class_id, method)
            top1 = records[(key, method["slot"], "torchray-pointing-v1", class_id)].data
            top100 = records[(key, method["slot"], "thesis-pointing-top100-v1", class_id)].data
            where = f"{method['key']}{' + enhancement' if method['enhance'] else ''} on {key}, class {class_id}"
            assert top1["score"] == hit, where
            assert abs(top1["point"][0] - point[0]) <= 1 and abs(top1["point"][1] - point[1]) <= 1, where
            assert top100["score"] == pytest.approx(fraction, abs=0.011), where
            assert top1["difficult"] == top100["difficult"] == difficult, where
            scores.setdefault(method["slot"], []).append((class_id, difficult, hit, fraction))

    # The table: mean over classes of the per-class hit rates (×100), from the recomputed scores.
    table = {}
    for protocol in run.results["protocols"]:
        column = 2 if protocol["name"] == "torchray-pointing-v1" else 3
        for row in protocol["rows"]:
            assert row["failed"] == 0 and row["n"] == len(truth)
            table.setdefault(protocol["name"], {})[row["label"]] = row["values"]["all"]
            if row["slot"] not in scores:
                continue
            for subset, value in (("all", row["values"]["all"]), ("difficult", row["values"]["difficult"])):
                per_class: dict[int, list[float]] = {}
                for class_id, difficult, *values in scores[row["slot"]]:
                    if subset == "all" or difficult:
                        per_class.setdefault(class_id, []).append(values[column - 2])
                if not per_class:
                    assert value is None
                    continue
                assert value == pytest.approx(np.mean([100 * np.mean(v) for v in per_class.values()]), abs=1e-9), \
                    (protocol["name"], row["label"], subset)
    return table


# ----------------------------------------------------------------------------- tests

def test_voc2007_pointing_on_landscape_and_portrait_images(alice, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    root = write_voc(tmp_path / "data")
    settings.DATA_ROOTS = [tmp_path / "data"]
    model = _upload(alice, "voc resnet18", "resnet18", VOC_CLASSES, seed=1)
    assert model.num_classes == 20 and model.family == "cnn"
    methods = [
        {"key": "gradcam"},
        {"key": "rise", "params": {"masks": 32, "cells": 6}},
        {"key": "msgcam", "params": {"scales": 2, "step": 32}},
        {"key": "gradcam", "enhance": True, "enhance_params": {"window": 112, "stride": 112, "radius": 20}},
        "baseline_centre",
    ]
    run = services.experiment_create(
        owner=alice, name="voc non-square", model=model, dataset={"kind": "voc2007", "paths": {"root": str(root)}},
        methods=methods, protocols=POINTING, seed=5, submit=False)
    assert run.num_images == 2
    run = services.experiment_run_sync(experiment=run)

    images = {key: Image.open(root / "VOC2007" / "JPEGImages" / f"{key}.jpg").convert("RGB") for key in VOC_IMAGES}
    assert {img.size for img in images.values()} == {(320, 240), (180, 300)}
    truth = voc_truth()
    assert [(k, c) for k, c, _, _ in truth] == [("000011", 7), ("000012", 7), ("000012", 11)]
    assert [d for *_, d in truth] == [False, True, False]
    # Recomputed: Grad-CAM (plain and enhanced), RISE and the centre prior; MSG-CAM's records are
    # checked for existence and success only (recomputing it would double the file's run time).
    table = check_run(run, truth, images, recompute={"gradcam", "rise", "baseline_centre"})
    # By hand: the centre prior's point is the image centre, (159.5, 119.5) in the landscape photo,
    # inside its cat's box (x 30..169): a hit; (89.5, 149.5) in the portrait, 0.5 px above its
    # dog (y from 150): a hit, 40 px below its cat (y up to 109): a miss. Cat 1/2, dog 1/1.
    assert table["torchray-pointing-v1"]["Centre map (baseline)"] == pytest.approx((50 + 100) / 2)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools with NumPy 2
def test_coco2014_pointing_on_landscape_and_portrait_images(alice, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    folder, annotations, data = write_coco(tmp_path / "coco")
    settings.DATA_ROOTS = [tmp_path / "coco"]
    names = [c["name"] for c in sorted(COCO_CATEGORIES, key=lambda c: c["id"])]
    model = _upload(alice, "coco resnet18", "resnet18", names, seed=2)
    run = services.experiment_create(
        owner=alice, name="coco non-square", model=model,
        dataset={"kind": "coco2014-val", "paths": {"images": str(folder), "annotations": str(annotations)}},
        methods=["gradcam", "baseline_centre"], protocols=POINTING, seed=1, submit=False)
    run = services.experiment_run_sync(experiment=run)

    truth = coco_truth(data)
    assert [(k, c) for k, c, _, _ in truth] == [("COCO_val2014_000000000139", 0), ("COCO_val2014_000000000139", 1),
                                                 ("COCO_val2014_000000000285", 2)]
    images = {key: Image.open(folder / f"{key}.jpg").convert("RGB") for key, *_ in truth}
    table = check_run(run, truth, images, recompute={"gradcam", "baseline_centre"})
    # By hand: the centre prior points at (149.5, 99.5) in the landscape image, inside the cat's
    # ellipse (0.71 + 0.12 < 1) and 51 px left of the crowd of people (x from 200): cat hit,
    # person miss; at (74.5, 119.5) in the portrait, 0.5 px above the cup's circle: a hit.
    assert table["torchray-pointing-v1"]["Centre map (baseline)"] == pytest.approx((100 + 0 + 100) / 3)


def test_a_vit_on_a_keep_aspect_protocol_is_refused_at_submission(alice, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    root = write_voc(tmp_path / "data")
    settings.DATA_ROOTS = [tmp_path / "data"]
    model = _upload(alice, "voc vit", "vit_tiny_patch16_224", VOC_CLASSES)
    assert model.family == "vit"
    with pytest.raises(ValueError, match=r"(?s)^(?=.*torchray-pointing-v1)(?=.*non-square)(?=.*ViT)(?=.*square)"):
        services.experiment_create(
            owner=alice, name="vit", model=model, dataset={"kind": "voc2007", "paths": {"root": str(root)}},
            methods=["gradcam"], protocols=["torchray-pointing-v1"], submit=False)
    assert not Experiment.objects.exists()


def test_a_vit_points_with_a_square_copy_of_the_protocol(alice, tmp_path, settings):
    # The way round for a ViT: the pointing game with every image resized to 224×224 (no crop,
    # so the map still covers the whole photo and is resized back to it).
    settings.MEDIA_ROOT = tmp_path / "media"
    root = write_voc(tmp_path / "data")
    settings.DATA_ROOTS = [tmp_path / "data"]
    model = _upload(alice, "voc vit", "vit_tiny_patch16_224", VOC_CLASSES)
    square = {"copy_of": "torchray-pointing-v1", "name": "pointing-square-224",
              "params": {"preprocessing": {"resize": "square", "size": 224}}}
    run = services.experiment_create(
        owner=alice, name="vit square", model=model, dataset={"kind": "voc2007", "paths": {"root": str(root)}},
        methods=["gradcam"], protocols=[square], submit=False)
    run = services.experiment_run_sync(experiment=run)
    assert run.status == Experiment.Status.DONE, run.error
    failed = list(Record.objects.filter(experiment=run, ok=False).values_list("image_key", "error"))
    assert not failed, f"failed records: {failed}"
    assert sorted(Record.objects.filter(experiment=run).values_list("image_key", "class_id")) == \
        [(key, c) for key, c, _, _ in voc_truth()]
    [row] = run.results["protocols"][0]["rows"]
    assert row["n"] == 3 and row["values"]["all"] is not None
