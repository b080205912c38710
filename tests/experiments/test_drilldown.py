"""The per-image drill-down's API: records carry their classes by name and the pointing game's
maximum and verdict; an image's ground truth (classes, boxes, masks) comes in the geometry of
the image the page draws, with no server paths."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.conf import settings
from PIL import Image
from scipy import ndimage

from experiments import services
from experiments.core.imageops import preprocess_mask
from experiments.core.protocols import get_protocol
from experiments.models import Experiment
from explain.core.zoo import imagenet_class_names

from .conftest import LOCALISATION

pytestmark = pytest.mark.django_db

POINTING = "torchray-pointing-v1"
CAUSAL = {"copy_of": "thesis-v1", "name": "thesis-coarse", "params": {"step": 224 * 224 // 8}}


@pytest.fixture()
def run(alice_api, lite0):
    body = {"name": "drill", "model": lite0.pk, "dataset": {**LOCALISATION, "subset": {"mode": "first", "n": 2}},
            "methods": ["gradcam", "baseline_centre"], "protocols": [POINTING, CAUSAL]}
    created = alice_api.post("/api/experiments/", body, format="json")
    assert created.status_code == 202, created.content
    experiment = Experiment.objects.get(pk=created.json()["id"])
    services.experiment_run_sync(experiment=experiment)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE
    return experiment


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_records_name_their_classes_and_the_pointing_verdict(alice_api, run):
    names = imagenet_class_names()
    sample = services.dataset_open(spec=run.dataset)[0]
    records = alice_api.get(f"/api/experiments/{run.pk}/records/?image=0&page_size=100").json()["results"]
    assert records and all(r["ok"] for r in records)
    for rec in records:
        assert rec["class_name"] == names[rec["class_id"]]
    pointing = [r for r in records if r["protocol"] == POINTING]
    # the pointing game explains every ground-truth class present, by name
    assert {r["class_name"] for r in pointing} == {names[c] for c in sample.labels}
    tolerance = get_protocol(POINTING).tolerance
    for rec in pointing:
        x, y = rec["pointing"]["point"]
        assert rec["pointing"]["tolerance"] == tolerance == 15
        # hit ⇔ the maximum lies strictly within 15 px of a ground-truth pixel of the class
        distance = ndimage.distance_transform_edt(~sample.class_mask(rec["class_id"]))
        assert rec["pointing"]["hit"] == bool(distance[y, x] < tolerance)
        assert rec["pointing"]["hit"] == (rec["score"] == 100.0)
    # other protocols have no pointing verdict
    assert all(r["pointing"] is None for r in records if r["protocol"] != POINTING)


def test_an_images_ground_truth_is_drawn_in_the_pictures_geometry(alice_api, run):
    names = imagenet_class_names()
    sample = services.dataset_open(spec=run.dataset)[1]
    base = f"/api/experiments/{run.pk}/images/1/"
    for protocol in (POINTING, "thesis-coarse"):
        truth = alice_api.get(f"{base}truth/", {"protocol": protocol})
        assert truth.status_code == 200, truth.content
        truth = truth.json()
        picture = _png(alice_api.get(base, {"protocol": protocol}))
        assert (truth["view"]["height"], truth["view"]["width"]) == picture.shape[:2]
        assert truth["key"] == sample.key and truth["original_size"] == list(sample.size)
        assert [(label["class_id"], label["name"]) for label in truth["labels"]] == \
            [(c, names[c]) for c in sample.labels]
        width, height = sample.size
        view_w, view_h = picture.shape[1], picture.shape[0]
        for obj, annotation in zip(truth["objects"], sample.objects):
            assert obj["name"] == names[annotation.label]
            # the causal copy squeezes the picture to 224×224, the pointing game keeps its aspect
            x0, y0, x1, y1 = annotation.box
            assert obj["box"] == pytest.approx([x0 * view_w / width, y0 * view_h / height,
                                                x1 * view_w / width, y1 * view_h / height], abs=1e-6)
        # each class's mask, in the picture's geometry, lies inside the class's boxes
        for class_id, url in truth["masks"].items():
            mask = _png(alice_api.get(url)) > 127
            assert mask.shape == picture.shape[:2] and mask.any()
            prep = services.protocol_read(CAUSAL if protocol == "thesis-coarse" else protocol).preprocessing
            expected = preprocess_mask(sample.class_mask(int(class_id)), prep)
            assert (mask == expected).all()
            rows, cols = np.nonzero(mask)
            boxes = [o["box"] for o in truth["objects"] if o["class_id"] == int(class_id)]
            assert any(b[0] - 1 <= cols.min() and cols.max() <= b[2] + 1 and b[1] - 1 <= rows.min()
                       and rows.max() <= b[3] + 1 for b in boxes)


def test_no_server_path_in_the_drill_down(alice_api, run):
    answers = [alice_api.get(f"/api/experiments/{run.pk}/images/0/truth/", {"protocol": POINTING}).content,
               alice_api.get(f"/api/experiments/{run.pk}/records/?image=0").content]
    for answer in answers:
        text = answer.decode()
        assert str(settings.DATA_DIR) not in text and run.dataset_info["root"] not in text
        assert "/samples/" not in text
        json.loads(text)


def test_the_drill_down_refuses_bad_requests_and_other_users(alice_api, bob_api, run):
    base = f"/api/experiments/{run.pk}/images"
    assert bob_api.get(f"{base}/0/truth/").status_code == 404
    assert bob_api.get(f"{base}/0/mask/?class=1").status_code == 404
    assert alice_api.get(f"{base}/9/truth/").status_code == 400
    assert alice_api.get(f"{base}/0/mask/?class=cat").status_code == 400
    absent = alice_api.get(f"{base}/0/mask/?class=999")
    assert absent.status_code == 400 and "no object of class 999" in absent.content.decode()
