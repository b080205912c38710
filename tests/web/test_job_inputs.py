"""A worker decodes a set's stored photo once: the set's later jobs reuse the preprocessed input,
and their maps are those of a fresh decode."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from explain.core import imaging
from explain.core.engine import explain as explain_one
from explain.models import Job
from explain.services import jobs as job_services

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_sets_jobs_decode_its_photo_once_and_map_as_a_fresh_decode_does(alice, lite0, monkeypatch):
    from explain import services

    monkeypatch.setattr(job_services, "_inputs", OrderedDict())
    decoded = []
    real_load = imaging.load_image

    def load_image(source):
        decoded.append(source)
        return real_load(source)

    monkeypatch.setattr(imaging, "load_image", load_image)

    def run(explanation_set, method, target) -> Job:
        job = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, method_key=method, target=target)
        services.job_run(job=Job.objects.select_related("explanation_set__model", "explanation_set__image").get(pk=job.pk))
        job.refresh_from_db()
        assert job.status == Job.Status.DONE, job.error
        return job

    cat = services.explanation_set_create(owner=alice, model=lite0, image=services.image_create(owner=alice, sample="chelsea"))
    done = [run(cat, "gradcam", 281), run(cat, "xgradcam", 285), run(cat, "gradcam", 282)]
    assert decoded == [cat.image.file.path]

    classifier = services.classifier_load(model=lite0)
    x, _ = imaging.preprocess(real_load(cat.image.file.path), classifier)
    for job in done:
        [want] = explain_one(classifier, x[None], job.method_key, targets=[job.target])
        got = torch.from_numpy(np.load(job.raw_file.path))
        torch.testing.assert_close(got, want.saliency, rtol=1e-5, atol=1e-7 * float(want.saliency.max()))

    # Each caller gets its own copy: a method that wrote into its input would not change the next job's.
    mine, _ = job_services._input_for(cat, classifier)
    mine.zero_()
    again, _ = job_services._input_for(cat, classifier)
    assert torch.equal(again, x) and decoded == [cat.image.file.path]

    # Another photo is its own entry, and the cache keeps only the latest INPUT_CACHE_SIZE inputs.
    monkeypatch.setattr(job_services, "INPUT_CACHE_SIZE", 1)
    cup = services.explanation_set_create(owner=alice, model=lite0, image=services.image_create(owner=alice, sample="coffee"))
    run(cup, "gradcam", 967)
    run(cup, "xgradcam", 967)
    assert decoded == [cat.image.file.path, cup.image.file.path] and len(job_services._inputs) == 1
    job_services._input_for(cat, classifier)        # dropped for the cup: decoded again
    assert decoded == [cat.image.file.path, cup.image.file.path, cat.image.file.path]
