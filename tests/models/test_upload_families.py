"""A lab's own classifiers end to end: a timm ConvNeXt, DeiT and Swin (random weights) uploaded
through the API, explained on the real worker with every method the family supports (saved,
fast parameters), each map done, finite and non-negative; the methods the architecture cannot
run are refused with the engine's reason. The upload names a timm architecture, so the models
have its registered sizes (ConvNeXt-atto 3.7 M, DeiT-tiny 5.7 M, Swin-tiny 28 M parameters)."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
import timm
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from safetensors.torch import save

from explain.core import method_support, wrap_model
from explain.models import Job

ARCHITECTURES = {
    "convnext": ("convnext_atto", "safetensors"),
    "deit": ("deit_tiny_patch16_224", "pth"),
    "swin": ("swin_tiny_patch4_window7_224", "safetensors"),
}
# The engine's verdicts per family (tests/models/test_families.py holds the same table for tiny instances).
UNSUPPORTED = {
    "convnext": {"attention_rollout", "gradient_rollout", "partial_lrp", "transformer_attribution"},
    "deit": {"cameras", "gradcampp", "groupcam", "layercam", "msgcam", "scorecam", "xgradcam"},
    "swin": {"attention_rollout", "gradient_rollout", "partial_lrp", "transformer_attribution",
             "cameras", "msgcam", "lrp"},
}
# Saved settings that keep the multi-pass methods short: fewer masks, groups and scales, and
# Score-CAM on an early stage (one pass per channel: 80 and 96 channels instead of 320 and 768).
FAST = {
    "rise": {"masks": 16}, "groupcam": {"groups": 4}, "cameras": {"scales": 2}, "msgcam": {"scales": 2},
    "scorecam": {"batch_size": 16},
}
SCORECAM_LAYER = {"convnext": "stages.1", "swin": "layers.0"}
CLASSES = ["heron", "kingfisher", "wren"]


def weights_upload(family: str) -> tuple[SimpleUploadedFile, torch.nn.Module]:
    architecture, fmt = ARCHITECTURES[family]
    torch.manual_seed(0)
    module = timm.create_model(architecture, pretrained=False, num_classes=len(CLASSES))
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    if fmt == "safetensors":
        return SimpleUploadedFile(f"{family}.safetensors", save(state)), module
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return SimpleUploadedFile(f"{family}.pth", buffer.getvalue()), module


def wait_finished(ids: list[int], timeout: float) -> list[Job]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = list(Job.objects.filter(pk__in=ids).order_by("pk"))
        if all(j.is_finished for j in jobs):
            return jobs
        time.sleep(0.5)
    raise AssertionError(f"jobs not finished after {timeout:.0f} s: "
                         f"{[(j.method_key, j.status) for j in Job.objects.filter(pk__in=ids)]}")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("family", sorted(ARCHITECTURES))
def test_uploaded_family_is_explained_by_every_method_it_supports(family, alice_api, celery_worker):
    weights, module = weights_upload(family)
    answer = alice_api.post("/api/models/", {
        "name": f"lab {family}", "architecture": ARCHITECTURES[family][0], "weights": weights,
        "class_names": SimpleUploadedFile("classes.txt", "\n".join(CLASSES).encode())}, format="multipart")
    assert answer.status_code == 201, answer.content
    model = answer.json()
    assert model["num_classes"] == 3

    listing = {m["key"]: m for m in alice_api.get(f"/api/models/{model['id']}/methods/").json()}
    unsupported = {k for k, m in listing.items() if m["reason_unavailable"]}
    assert unsupported == UNSUPPORTED[family], {k: listing[k]["reason_unavailable"] for k in unsupported}
    # The same verdicts as the engine gives the module itself, wrapped in a notebook.
    engine = method_support(wrap_model(module, name=f"lab {family}"))
    assert {k for k, reason in engine.items() if reason} == unsupported
    for key in unsupported:
        assert engine[key] in listing[key]["reason_unavailable"]
    supported = sorted(set(listing) - unsupported)

    for key in supported:
        params = dict(FAST.get(key, {}))
        if key == "scorecam":
            params["layer"] = SCORECAM_LAYER[family]
        if params:
            saved = alice_api.post("/api/method-settings/", {"model": model["id"], "method_key": key,
                                                            "params": params}, format="json")
            assert saved.status_code == 201, saved.content

    image = alice_api.post("/api/images/", {"sample": "chelsea"}, format="json").json()
    accepted = alice_api.post("/api/explanation-sets/", {"model": model["id"], "image": image["id"]}, format="json")
    assert accepted.status_code == 202, accepted.content
    set_url = accepted.json()["url"]
    for key in sorted(unsupported):
        refused = alice_api.post(f"{set_url}maps/", {"target": 1, "methods": [{"key": key}]}, format="json")
        assert refused.status_code == 400, key
        assert listing[key]["reason_unavailable"] in refused.content.decode(), key
    queued = alice_api.post(f"{set_url}maps/", {"target": 1, "methods": [{"key": k} for k in supported]},
                            format="json")
    assert queued.status_code == 202, queued.content
    ids = [int(u.rstrip("/").split("/")[-1]) for u in queued.json()["jobs"]]
    jobs = wait_finished(ids, timeout=300)
    failed = {j.method_key: j.error for j in jobs if j.status != Job.Status.DONE}
    assert not failed, failed
    assert sorted(j.method_key for j in jobs) == supported
    for job in jobs:
        raw = alice_api.get(f"/api/jobs/{job.pk}/raw/")
        assert raw.status_code == 200, job.method_key
        saliency = np.load(io.BytesIO(b"".join(raw.streaming_content)))
        assert saliency.shape == (224, 224), job.method_key
        assert np.isfinite(saliency).all() and (saliency >= 0).all(), job.method_key
        assert job.manifest["model"] == f"lab {family}" and job.manifest["method"] == job.method_key
        if job.method_key == "scorecam":
            assert job.manifest["params"]["layer"] == SCORECAM_LAYER[family]
