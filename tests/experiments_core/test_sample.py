"""The bundled sample set, and the metrics run end to end on it with the real EfficientNet-Lite0."""
import hashlib

import numpy as np
import pytest
import torch

from experiments.core.datasets import sample_dataset, sample_photos
from experiments.core.imageops import preprocess_pixels
from experiments.core.metrics import aggregate_pointing, causal_record, perturbation_record, pointing_pairs, pointing_record
from experiments.core.protocols import copy_protocol, get_protocol


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("samples")


@pytest.fixture(scope="module")
def localisation(cache):
    return sample_dataset("localisation", cache_dir=cache, seed=0, num_images=6)


@pytest.fixture(scope="module")
def classifier():
    from explain.core.zoo import load_classifier

    return load_classifier("efficientnet_lite0", device="cpu")


def digest(ds):
    return [hashlib.sha256(open(s.path, "rb").read()).hexdigest() for s in ds]


def test_localisation_set_geometry(localisation):
    assert localisation.name == "sample-localisation" and len(localisation) == 6 and localisation.num_classes == 1000
    for i, sample in enumerate(localisation):
        width, height = sample.size
        assert sample.load_image().size == (width, height)
        assert len(sample.objects) == (1 if i % 2 == 0 else 2)
        assert len(set(sample.labels)) == len(sample.objects)  # two objects are two classes
        union = np.zeros((height, width), bool)
        for obj in sample.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            mask = obj.mask(height, width)
            assert mask.any() and not mask[:, : int(x0)].any() and not mask[: int(y0)].any()
            assert not (mask & union).any()  # objects never overlap
            union |= mask
        assert np.array_equal(sample.foreground_mask(), union)


def test_generation_is_deterministic_and_cached(cache, localisation, tmp_path):
    again = sample_dataset("localisation", cache_dir=tmp_path, seed=0, num_images=6)
    assert digest(again) == digest(localisation)
    other = sample_dataset("localisation", cache_dir=tmp_path, seed=1, num_images=6)
    assert digest(other) != digest(localisation)
    before = [s.path for s in localisation]
    assert [s.path for s in sample_dataset("localisation", cache_dir=cache, seed=0, num_images=6)] == before


def test_classification_labels_are_in_the_models_top5(cache, classifier):
    ds = sample_dataset("classification", cache_dir=cache)
    assert {s.key for s in ds} >= {"chelsea", "coffee", "camera", "motorcycle", "rocket"}
    assert {s.key: s.label for s in ds} == sample_photos()
    prep = get_protocol("chefer-perturbation-v1").preprocessing
    batch = torch.stack([preprocess_pixels(s.load_image(), prep) for s in ds])
    with torch.no_grad():
        top5 = classifier.module(classifier.normalize(batch)).topk(5, dim=1).indices
    for sample, row in zip(ds, top5):
        assert sample.label in row.tolist(), sample.key


def test_single_object_composites_are_recognised(localisation, classifier):
    prep = get_protocol("chefer-perturbation-v1").preprocessing
    singles = [s for s in localisation if len(s.objects) == 1]
    batch = torch.stack([preprocess_pixels(s.load_image(), prep) for s in singles])
    with torch.no_grad():
        top5 = classifier.module(classifier.normalize(batch)).topk(5, dim=1).indices
    for sample, row in zip(singles, top5):
        assert sample.label in row.tolist(), sample.key


def test_pointing_with_an_oracle_map_hits_and_an_inverted_one_misses(localisation):
    protocol = get_protocol("torchray-pointing-v1")
    oracle, inverted = [], []
    for sample in localisation:
        for class_id, mask, difficult in pointing_pairs(sample, protocol):
            smooth = torch.from_numpy(mask.astype(np.float32))
            oracle.append(pointing_record(smooth, mask, class_id=class_id, protocol=protocol, difficult=difficult))
            inverted.append(pointing_record(1 - smooth, mask, class_id=class_id, protocol=protocol, difficult=difficult))
    assert aggregate_pointing(oracle)["all"]["score"] == 100.0
    assert aggregate_pointing(inverted)["all"]["score"] < 50.0


@pytest.mark.slow
def test_object_maps_beat_background_maps_on_the_real_model(cache, classifier):
    """Deleting the object first must hurt the prediction more than deleting the background first."""
    sample = next(s for s in sample_dataset("classification", cache_dir=cache) if s.key == "coffee")
    protocol = copy_protocol("thesis-v1", "coarse-thesis", step=448 * 4)
    pixels = preprocess_pixels(sample.load_image(), protocol.preprocessing)
    box = torch.zeros(224, 224)
    x0, y0, x1, y1 = sample.objects[0].box
    w, h = sample.size
    box[int(y0 * 224 / h):int(y1 * 224 / h), int(x0 * 224 / w):int(x1 * 224 / w)] = 1.0
    # A centred blob inside the box gives a graded map, not a flat one.
    yy, xx = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    blob = box * torch.exp(-((yy - 112) ** 2 + (xx - 112) ** 2) / (2 * 60.0 ** 2))
    kwargs = dict(protocol=protocol, mean=classifier.mean, std=classifier.std, batch_size=32)
    good = causal_record(classifier.module, pixels, blob, sample.label, **kwargs)
    bad = causal_record(classifier.module, pixels, 1 - blob, sample.label, **kwargs)
    assert good.clean_top1 == sample.label
    assert good.overall > bad.overall + 20
    pert = get_protocol("chefer-perturbation-v1")
    kw = dict(label=sample.label, explained=sample.label, mode="target", protocol=pert, mean=classifier.mean, std=classifier.std)
    good_p = perturbation_record(classifier.module, pixels, blob, **kw)
    bad_p = perturbation_record(classifier.module, pixels, 1 - blob, **kw)
    assert sum(good_p.negative_correct) > sum(bad_p.negative_correct)
    assert sum(good_p.positive_correct) < sum(bad_p.positive_correct)
