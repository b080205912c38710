"""A set's stored photo is decoded once: its later jobs reuse the preprocessed input, from the
worker process's own cache or, on another worker, from the copy shared through Redis, and their
maps are those of a fresh decode. With Redis away, a worker decodes the photo itself."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from django.conf import settings

from explain import services
from explain.core import imaging
from explain.core.engine import explain as explain_one
from explain.models import ExplanationSet, Job
from explain.services import images as image_services
from saliency_site import redis_clients

pytestmark = pytest.mark.django_db(transaction=True)
REAL_LOAD = imaging.load_image


@pytest.fixture()
def decoded(monkeypatch):
    """The paths decoded, in order; this process's cache and Redis's shared inputs start empty."""
    monkeypatch.setattr(image_services, "_inputs", OrderedDict())
    shared = redis_clients.fail_fast(settings.REDIS_URL, 5)
    for key in shared.scan_iter("saliency:input:*"):
        shared.delete(key)
    paths = []

    def load_image(source):
        paths.append(source)
        return REAL_LOAD(source)

    monkeypatch.setattr(imaging, "load_image", load_image)
    return paths


def _set(owner, model, sample: str) -> ExplanationSet:
    # Made directly, so no prediction is queued for a worker that would decode the photo first.
    return ExplanationSet.objects.create(owner=owner, model=model, image=services.image_create(owner=owner, sample=sample))


def _run(explanation_set, method, target) -> Job:
    job = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, method_key=method, target=target)
    services.job_run(job=Job.objects.select_related("explanation_set__model", "explanation_set__image").get(pk=job.pk))
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.error
    return job


def _fresh(image, classifier):
    """The input decoded here and now, uncounted."""
    return imaging.preprocess(REAL_LOAD(image.file.path), classifier)


def test_a_sets_jobs_decode_its_photo_once_and_map_as_a_fresh_decode_does(decoded, alice, lite0):
    cat = _set(alice, lite0, "chelsea")
    done = [_run(cat, "gradcam", 281), _run(cat, "xgradcam", 285), _run(cat, "gradcam", 282)]
    assert decoded == [cat.image.file.path]

    classifier = services.classifier_load(model=lite0)
    x, geometry = _fresh(cat.image, classifier)
    for job in done:
        [want] = explain_one(classifier, x[None], job.method_key, targets=[job.target])
        got = torch.from_numpy(np.load(job.raw_file.path))
        torch.testing.assert_close(got, want.saliency, rtol=1e-5, atol=1e-7 * float(want.saliency.max()))

    # Each caller gets its own copy: a method that wrote into its input would not change the next job's.
    mine, _ = image_services.image_input_read(image=cat.image, classifier=classifier)
    mine.zero_()
    again, again_geometry = image_services.image_input_read(image=cat.image, classifier=classifier)
    assert torch.equal(again, x) and again_geometry == geometry and decoded == [cat.image.file.path]


def test_another_worker_takes_the_shared_input_and_the_process_keeps_only_the_latest(decoded, alice, lite0, monkeypatch):
    classifier = services.classifier_load(model=lite0)
    cat = _set(alice, lite0, "chelsea")
    _run(cat, "gradcam", 281)
    monkeypatch.setattr(image_services, "_inputs", OrderedDict())     # as a worker process that never saw it
    elsewhere = _run(cat, "gradcam", 281)
    assert decoded == [cat.image.file.path]
    x, geometry = _fresh(cat.image, classifier)
    shared, shared_geometry = image_services.image_input_read(image=cat.image, classifier=classifier)
    assert torch.equal(shared, x) and shared_geometry == geometry      # bit for bit through Redis
    [want] = explain_one(classifier, x[None], "gradcam", targets=[281])
    got = torch.from_numpy(np.load(elsewhere.raw_file.path))
    torch.testing.assert_close(got, want.saliency, rtol=1e-5, atol=1e-7 * float(want.saliency.max()))

    # Another photo is its own entry; the process keeps the latest INPUT_CACHE_SIZE inputs.
    monkeypatch.setattr(image_services, "INPUT_CACHE_SIZE", 1)
    cup = _set(alice, lite0, "coffee")
    _run(cup, "gradcam", 967)
    assert decoded == [cat.image.file.path, cup.image.file.path] and len(image_services._inputs) == 1


def test_with_redis_away_a_worker_decodes_the_photo_itself(decoded, alice, lite0, monkeypatch):
    closed = redis_clients.fail_fast("redis://127.0.0.1:9/0", 0.5)     # the discard port: nothing listens
    monkeypatch.setattr(image_services, "_shared", closed)
    cat = _set(alice, lite0, "chelsea")
    _run(cat, "gradcam", 281)
    monkeypatch.setattr(image_services, "_inputs", OrderedDict())
    _run(cat, "gradcam", 281)
    assert decoded == [cat.image.file.path, cat.image.file.path]
