"""The REST API: every endpoint, other users' objects (404), and uploads that must be refused."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from explain import tasks
from explain.core import imaging, zoo
from explain.core.engine import explain
from explain.models import ClassifierModel, Job

from .conftest import png_bytes, state_dict_bytes

pytestmark = pytest.mark.django_db


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def run_jobs(ids) -> list[Job]:
    """Run queued jobs here with the real task function (what a worker does, without the broker)."""
    for job_id in ids:
        tasks.run_job(job_id)
    return [Job.objects.get(pk=i) for i in ids]


def job_id_from(url: str) -> int:
    return int(url.rstrip("/").split("/")[-1])


# -- schema --------------------------------------------------------------------------------

def test_openapi_schema_and_docs(alice_api):
    schema = alice_api.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/models/", "/api/images/", "/api/explanation-sets/{id}/maps/", "/api/jobs/{id}/map/",
                 "/api/method-settings/", "/api/shares/", "/api/auth/token/"):
        assert path in text
    assert alice_api.get("/api/docs/").status_code == 200


def test_anonymous_is_refused(client, lite0):
    for url in ("/api/models/", "/api/images/", "/api/jobs/", "/api/shares/", "/api/method-settings/"):
        assert client.get(url).status_code in (401, 403)


# -- models --------------------------------------------------------------------------------

def test_models_list_builtins_with_weights_state(alice_api, builtin_models):
    rows = alice_api.get("/api/models/").json()["results"]
    by_key = {r["builtin_key"]: r for r in rows}
    assert set(by_key) == set(zoo.BUILTIN_MODELS)
    for key, row in by_key.items():
        assert row["weights_present"] == (zoo.weights_file(key) is not None)
    assert by_key["efficientnet_lite0"]["weights_present"]


def test_architectures_listed(alice_api):
    names = {a["name"] for a in alice_api.get("/api/architectures/").json()}
    assert {"resnet18", "vgg19", "efficientnet_lite0", "vit_tiny_patch16_224"} <= names


def test_upload_rename_delete_and_privacy(alice_api, bob_api, settings):
    weights = state_dict_bytes("mobilenet_v2", 3, fmt="safetensors")
    response = alice_api.post("/api/models/", {
        "name": "tiny", "architecture": "mobilenet_v2", "weights": upload("w.safetensors", weights),
        "class_names": upload("classes.txt", b"cat\ndog\nbird\n")}, format="multipart")
    assert response.status_code == 201, response.content
    model_id = response.json()["id"]
    row = ClassifierModel.objects.get(pk=model_id)
    assert row.num_classes == 3 and row.class_names == ["cat", "dog", "bird"]
    assert row.default_layers == {"cam": "features"} and "features.18" in row.layers
    stored = Path(row.weights_file.path)
    assert stored.suffix == ".safetensors" and stored.is_file()
    # Stored tensors equal the uploaded ones.
    from safetensors.torch import load, load_file

    original, kept = load(weights), load_file(str(stored))
    assert set(original) == set(kept) and all(torch.equal(original[k], kept[k]) for k in original)

    # Bob sees built-ins only and gets 404 for Alice's model.
    assert model_id not in [m["id"] for m in bob_api.get("/api/models/").json()["results"]]
    assert bob_api.get(f"/api/models/{model_id}/").status_code == 404
    assert bob_api.patch(f"/api/models/{model_id}/", {"name": "x"}, format="json").status_code == 404
    assert bob_api.delete(f"/api/models/{model_id}/").status_code == 404

    renamed = alice_api.patch(f"/api/models/{model_id}/", {"name": "tiny v2"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "tiny v2"
    assert alice_api.delete(f"/api/models/{model_id}/").status_code == 204
    assert not ClassifierModel.objects.filter(pk=model_id).exists()


def test_builtin_models_cannot_be_changed(alice_api, lite0):
    assert alice_api.patch(f"/api/models/{lite0.pk}/", {"name": "mine"}, format="json").status_code == 403
    assert alice_api.delete(f"/api/models/{lite0.pk}/").status_code == 403


def _post_model(api, architecture: str, weights: bytes, filename="w.pth", classes: bytes | None = None, name="m"):
    data = {"name": name, "architecture": architecture, "weights": upload(filename, weights)}
    if classes is not None:
        data["class_names"] = upload("classes.txt", classes)
    return api.post("/api/models/", data, format="multipart")


class _RunsCode:
    """A pickle payload that would create a file when unpickled by a careless loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("case", ["garbage", "wrong_architecture", "class_count", "code_pickle", "safetensors_trunc",
                                  "empty_classes", "latin1_classes"])
def test_bad_weights_uploads_are_refused_with_a_reason(alice_api, tmp_path, case):
    marker = tmp_path / "pwned"
    if case == "garbage":
        response = _post_model(alice_api, "mobilenet_v2", b"this is not a weights file at all")
        expected = "not a pytorch state_dict"
    elif case == "wrong_architecture":
        response = _post_model(alice_api, "resnet18", state_dict_bytes("mobilenet_v2", 3))
        expected = "do not fit the architecture"
    elif case == "class_count":
        response = _post_model(alice_api, "mobilenet_v2", state_dict_bytes("mobilenet_v2", 3), classes=b"a\nb\n")
        expected = "lists 2 classes but the model's head has 3"
    elif case == "empty_classes":
        response = _post_model(alice_api, "mobilenet_v2", state_dict_bytes("mobilenet_v2", 3), classes=b"\n")
        expected = "class-names file is empty"
    elif case == "latin1_classes":
        response = _post_model(alice_api, "mobilenet_v2", state_dict_bytes("mobilenet_v2", 3),
                               classes="caf\xe9\nna\xefve\nthird\n".encode("latin-1"))
        expected = "not UTF-8"
    elif case == "code_pickle":
        buffer = io.BytesIO()
        torch.save({"weight": _RunsCode(marker)}, buffer, pickle_protocol=pickle.DEFAULT_PROTOCOL)
        response = _post_model(alice_api, "mobilenet_v2", buffer.getvalue())
        expected = "loads safely"
    else:
        data = state_dict_bytes("mobilenet_v2", 3, fmt="safetensors")
        response = _post_model(alice_api, "mobilenet_v2", data[: len(data) // 2], filename="w.safetensors")
        expected = "safetensors"
    assert response.status_code == 400, response.content
    assert expected.lower() in response.json()["detail"].lower()
    assert not marker.exists(), "the upload ran code"
    assert not ClassifierModel.objects.filter(owner__isnull=False).exists()


def test_unknown_architecture_is_refused(alice_api):
    response = _post_model(alice_api, "resnet9000", state_dict_bytes("mobilenet_v2", 3))
    assert response.status_code == 400 and "architecture" in response.json()


def test_methods_of_a_model_show_layers_and_availability(alice_api, lite0, builtin_models):
    methods = {m["key"]: m for m in alice_api.get(f"/api/models/{lite0.pk}/methods/").json()}
    assert {"gradcam", "gradcampp", "layercam", "xgradcam"} <= set(methods)
    layer = next(p for p in methods["gradcam"]["params"] if p["name"] == "layer")
    assert layer["default"] == "bn2" and "bn2" in layer["choices"] and "blocks.6" in layer["choices"]
    assert all(m["reason_unavailable"] == "" for m in methods.values() if "cnn" in m["families"])
    vit = builtin_models["vit_b_16"]
    vit_methods = {m["key"]: m for m in alice_api.get(f"/api/models/{vit.pk}/methods/").json()}
    assert "CNN models only" in vit_methods["gradcampp"]["reason_unavailable"]


# -- method settings ---------------------------------------------------------------------

def test_method_settings_validate_save_and_reset(alice_api, bob_api, lite0):
    bad_range = alice_api.post("/api/method-settings/", {"model": lite0.pk, "method_key": "groupcam",
                                                          "params": {"groups": 0}}, format="json")
    assert bad_range.status_code == 400 and "must be >= 1" in bad_range.json()["detail"]
    bad_layer = alice_api.post("/api/method-settings/", {"model": lite0.pk, "method_key": "gradcam",
                                                          "params": {"layer": "no.such.layer"}}, format="json")
    assert bad_layer.status_code == 400 and "no layer" in bad_layer.json()["detail"]
    unknown = alice_api.post("/api/method-settings/", {"model": lite0.pk, "method_key": "gradcam",
                                                        "params": {"groups": 3}}, format="json")
    assert unknown.status_code == 400
    ok = alice_api.post("/api/method-settings/", {"model": lite0.pk, "method_key": "gradcam",
                                                   "params": {"layer": "blocks.5"},
                                                   "enhance_params": {"stride": "64"}}, format="json")
    assert ok.status_code == 201, ok.content
    body = ok.json()
    assert body["params"] == {"layer": "blocks.5"} and body["enhance_params"] == {"stride": 64}
    # Saving again replaces the row.
    again = alice_api.post("/api/method-settings/", {"model": lite0.pk, "method_key": "gradcam",
                                                      "params": {"layer": "blocks.4"}}, format="json")
    assert again.json()["id"] == body["id"]
    assert bob_api.get(f"/api/method-settings/{body['id']}/").status_code == 404
    assert bob_api.delete(f"/api/method-settings/{body['id']}/").status_code == 404
    assert alice_api.delete(f"/api/method-settings/{body['id']}/").status_code == 204
    assert alice_api.get("/api/method-settings/").json()["results"] == []


# -- images --------------------------------------------------------------------------------

def test_image_upload_and_sample(alice_api, bob_api):
    response = alice_api.post("/api/images/", {"file": upload("red.png", png_bytes(64, 48))}, format="multipart")
    assert response.status_code == 201, response.content
    image = response.json()
    assert (image["width"], image["height"]) == (64, 48)
    display = alice_api.get(image["url"])
    assert display.status_code == 200 and display["Content-Type"] == "image/jpeg"
    assert bob_api.get(image["url"]).status_code == 404
    assert bob_api.get(f"/api/images/{image['id']}/").status_code == 404
    sample = alice_api.post("/api/images/", {"sample": "chelsea"}, format="json").json()
    assert (sample["width"], sample["height"]) == (451, 300)
    assert (sample["display_width"], sample["display_height"]) == (451, 300)
    assert alice_api.delete(f"/api/images/{sample['id']}/").status_code == 204


def _huge_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8000, 7000)).save(buffer, format="PNG")  # 56 MP, a few kB compressed
    return buffer.getvalue()


@pytest.mark.parametrize("case, fragment", [
    ("not_image", "not an image"),
    ("truncated", "truncated"),
    ("huge", "megapixels"),
])
def test_bad_images_are_refused(alice_api, case, fragment):
    if case == "not_image":
        data = b"%PDF-1.4 definitely not a picture"
    elif case == "truncated":
        full = io.BytesIO()
        from PIL import Image

        Image.effect_noise((200, 200), 40).convert("RGB").save(full, format="JPEG")
        data = full.getvalue()[: len(full.getvalue()) // 2]
    else:
        data = _huge_png()
    response = alice_api.post("/api/images/", {"file": upload("x.jpg", data)}, format="multipart")
    assert response.status_code == 400, response.content
    assert fragment in response.json()["detail"]


def test_image_request_needs_exactly_one_source(alice_api):
    assert alice_api.post("/api/images/", {}, format="json").status_code == 400
    assert alice_api.post("/api/images/", {"sample": "nonexistent"}, format="json").status_code == 400


# -- explanation sets and jobs ----------------------------------------------------------

@pytest.fixture()
def predicted_set(alice_api, lite0):
    image = alice_api.post("/api/images/", {"sample": "coffee"}, format="json").json()
    response = alice_api.post("/api/explanation-sets/", {"model": lite0.pk, "image": image["id"]}, format="json")
    assert response.status_code == 202 and response["Location"] == response.json()["url"]
    [job] = run_jobs([job_id_from(u) for u in response.json()["jobs"]])
    assert job.status == "done", job.error
    return alice_api.get(response.json()["url"]).json()


def test_prediction_top5_matches_the_model(predicted_set, lite0):
    top = predicted_set["predictions"]
    assert predicted_set["status"] == "done" and len(top) == 5
    probabilities = [p["probability"] for p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    # Independent check: the zoo model on the same preprocessed pixels.
    from explain.models import InputImage

    clf = zoo.load_classifier("efficientnet_lite0")
    x, _ = imaging.preprocess(imaging.load_image(InputImage.objects.get(pk=predicted_set["image"]["id"]).file.path), clf)
    with torch.no_grad():
        expected = torch.softmax(clf.module(x[None].to(clf.device)), dim=1)[0].topk(5)
    assert [p["index"] for p in top] == expected.indices.tolist()
    assert np.allclose(probabilities, expected.values.tolist(), atol=1e-5)
    assert top[0]["name"] == "espresso"


def test_maps_jobs_results_and_saved_settings(alice_api, bob_api, predicted_set, lite0):
    alice_api.post("/api/method-settings/", {"model": lite0.pk, "method_key": "layercam",
                                              "params": {"layer": "blocks.5"}}, format="json")
    target = predicted_set["predictions"][1]["index"]
    response = alice_api.post(f"{predicted_set['url']}maps/", {
        "target": target, "methods": [{"key": "gradcam"}, {"key": "layercam"}]}, format="json")
    assert response.status_code == 202
    urls = response.json()["jobs"]
    queued = alice_api.get(urls[0]).json()
    assert queued["status"] == "queued" and queued["progress"] == 0
    gradcam, layercam = run_jobs([job_id_from(u) for u in urls])
    assert gradcam.status == layercam.status == "done"
    assert layercam.params == {"layer": "blocks.5"} and layercam.manifest["layer"] == "blocks.5"
    assert gradcam.params == {} and gradcam.manifest["layer"] == "bn2"

    body = alice_api.get(urls[0]).json()
    assert body["progress"] == 1 and body["seconds"] > 0 and body["target"] == target
    raw = np.load(io.BytesIO(b"".join(alice_api.get(body["raw_url"]).streaming_content)))
    assert raw.shape == (224, 224) and raw.dtype == np.float32
    # The stored raw map is what the engine gives for that image and class.
    clf = zoo.load_classifier("efficientnet_lite0")
    from explain.models import InputImage

    x, _ = imaging.preprocess(imaging.load_image(InputImage.objects.get(pk=predicted_set["image"]["id"]).file.path), clf)
    [expected] = explain(clf, x[None], "gradcam", targets=[target])
    assert np.allclose(raw, expected.saliency.numpy(), atol=1e-5)
    shown = np.frombuffer(alice_api.get(body["map_url"]).content, dtype="<f4")
    assert shown.size == body["map_width"] * body["map_height"]
    assert np.isclose(shown.max(), body["map_max"]) and shown.min() >= 0

    # Bob reaches none of it.
    assert bob_api.get(urls[0]).status_code == 404
    assert bob_api.get(body["map_url"]).status_code == 404
    assert bob_api.get(predicted_set["url"]).status_code == 404
    assert bob_api.post(f"{predicted_set['url']}maps/", {"target": 1, "methods": [{"key": "gradcam"}]},
                        format="json").status_code == 404
    assert len(alice_api.get("/api/jobs/").json()["results"]) == 3
    assert bob_api.get("/api/jobs/").json()["results"] == []


def test_maps_request_errors(alice_api, predicted_set):
    url = f"{predicted_set['url']}maps/"
    out_of_range = alice_api.post(url, {"target": 5000, "methods": [{"key": "gradcam"}]}, format="json")
    assert out_of_range.status_code == 400 and "out of range" in out_of_range.json()["detail"]
    unknown = alice_api.post(url, {"target": 1, "methods": [{"key": "nosuchcam"}]}, format="json")
    assert unknown.status_code == 400 and "unknown method" in unknown.json()["detail"]
    empty = alice_api.post(url, {"target": 1, "methods": []}, format="json")
    assert empty.status_code == 400


def test_missing_weights_answer_409(alice_api, builtin_models):
    missing = next((r for r in builtin_models.values() if not r.weights_present), None)
    if missing is None:
        pytest.skip("every built-in model has weights on this machine")
    image = alice_api.post("/api/images/", {"sample": "rocket"}, format="json").json()
    response = alice_api.post("/api/explanation-sets/", {"model": missing.pk, "image": image["id"]}, format="json")
    assert response.status_code == 409 and "import_weights" in response.json()["detail"]


def test_cannot_use_other_users_image_or_model(alice_api, bob_api, lite0):
    image = alice_api.post("/api/images/", {"sample": "rocket"}, format="json").json()
    response = bob_api.post("/api/explanation-sets/", {"model": lite0.pk, "image": image["id"]}, format="json")
    assert response.status_code == 400 and "image" in response.json()


def test_uploaded_model_explains_end_to_end(alice_api):
    response = _post_model(alice_api, "mobilenet_v2", state_dict_bytes("mobilenet_v2", 4), name="mine",
                           classes=b"a\nb\nc\nd\n")
    model_id = response.json()["id"]
    image = alice_api.post("/api/images/", {"sample": "astronaut"}, format="json").json()
    accepted = alice_api.post("/api/explanation-sets/", {"model": model_id, "image": image["id"]}, format="json")
    run_jobs([job_id_from(u) for u in accepted.json()["jobs"]])
    detail = alice_api.get(accepted.json()["url"]).json()
    assert {p["name"] for p in detail["predictions"]} <= {"a", "b", "c", "d"} and len(detail["predictions"]) == 4
    maps = alice_api.post(f"{detail['url']}maps/", {"target": 2, "methods": [{"key": "gradcam", "enhance": False}]},
                          format="json")
    [job] = run_jobs([job_id_from(u) for u in maps.json()["jobs"]])
    assert job.status == "done", job.error
    assert job.manifest["target"] == 2 and job.manifest["layer"] == "features"


def test_failed_job_reports_the_error(alice_api, predicted_set, lite0):
    # A saved layer that exists but gives no spatial map makes the method fail at run time.
    alice_api.post("/api/method-settings/", {"model": lite0.pk, "method_key": "gradcam",
                                              "params": {"layer": "classifier"}}, format="json")
    response = alice_api.post(f"{predicted_set['url']}maps/", {"target": 1, "methods": [{"key": "gradcam"}]},
                              format="json")
    [job] = run_jobs([job_id_from(u) for u in response.json()["jobs"]])
    assert job.status == "failed" and "feature map" in job.error
    assert alice_api.get(f"/api/jobs/{job.pk}/").json()["error"] == job.error
    assert alice_api.get(f"/api/jobs/{job.pk}/map/").status_code == 404


# -- shares --------------------------------------------------------------------------------

def test_share_public_page_files_and_revoke(alice_api, bob_api, predicted_set, client):
    maps = alice_api.post(f"{predicted_set['url']}maps/", {"target": 967, "methods": [{"key": "gradcam"}]},
                          format="json")
    [job] = run_jobs([job_id_from(u) for u in maps.json()["jobs"]])
    # Bob cannot share Alice's set; unknown views are refused.
    assert bob_api.post("/api/shares/", {"view": "explanation", "object_id": predicted_set["id"]},
                        format="json").status_code == 404
    assert alice_api.post("/api/shares/", {"view": "nope", "object_id": predicted_set["id"]},
                          format="json").status_code == 400
    created = alice_api.post("/api/shares/", {"view": "segmentation", "object_id": predicted_set["id"],
                                              "options": {"jobs": [job.pk], "ratio": 30}}, format="json")
    assert created.status_code == 201, created.content
    share = created.json()
    assert len(share["token"]) >= 40 and share["active"]
    page = client.get(f"/s/{share['token']}/")  # logged out
    assert page.status_code == 200
    text = page.content.decode()
    assert "Segmentation" in text and "Grad-CAM" in text and "bn2" in text and job.manifest["weights_checksum"] in text
    image = client.get(f"/s/{share['token']}/files/image")
    assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
    assert client.get(f"/s/{share['token']}/files/map-{job.pk}").status_code == 200
    assert client.get(f"/s/{share['token']}/files/map-999999").status_code == 404
    assert client.get(f"/s/{share['token']}x/").status_code == 404
    # Only the owner lists and revokes.
    assert [s["id"] for s in alice_api.get("/api/shares/").json()["results"]] == [share["id"]]
    assert bob_api.get("/api/shares/").json()["results"] == []
    assert bob_api.delete(f"/api/shares/{share['id']}/").status_code == 404
    assert alice_api.delete(f"/api/shares/{share['id']}/").status_code == 204
    assert client.get(f"/s/{share['token']}/").status_code == 404
    assert client.get(f"/s/{share['token']}/files/image").status_code == 404
    assert alice_api.get(f"/api/shares/{share['id']}/").json()["active"] is False


def test_share_options_are_validated(alice_api, predicted_set):
    response = alice_api.post("/api/shares/", {"view": "segmentation", "object_id": predicted_set["id"],
                                               "options": {"ratio": 500}}, format="json")
    assert response.status_code == 400 and "ratio" in response.json()["options"]


@pytest.mark.parametrize("options, fragment", [
    ({"ratio": {}}, "ratio must be a number"),
    ({"opacity": [1]}, "opacity must be a number"),
    ({"opacity": "50"}, "opacity must be a number"),
    ({"ratio": True}, "ratio must be a number"),
    ({"colormap": ["jet"]}, "colormap"),
    ({"jobs": "1,2"}, "jobs"),
])
def test_share_options_of_the_wrong_type_answer_400(alice_api, predicted_set, options, fragment):
    response = alice_api.post("/api/shares/", {"view": "explanation", "object_id": predicted_set["id"],
                                               "options": options}, format="json")
    assert response.status_code == 400, response.content
    assert fragment in " ".join(response.json()["options"] if isinstance(response.json()["options"], list)
                                else [str(response.json()["options"])])


def test_share_pages_answer_get_and_head_only(alice_api, predicted_set, client):
    share = alice_api.post("/api/shares/", {"view": "explanation", "object_id": predicted_set["id"]},
                           format="json").json()
    for url in (f"/s/{share['token']}/", f"/s/{share['token']}/files/image"):
        assert client.get(url).status_code == 200
        assert client.head(url).status_code == 200
        for method in ("post", "put", "patch", "delete"):
            assert getattr(client, method)(url).status_code == 405, (method, url)
    assert client.get(f"/s/{share['token']}/").status_code == 200  # the link still works


def test_uploaded_vit_explains_with_token_layer(alice_api):
    response = _post_model(alice_api, "vit_tiny_patch16_224", state_dict_bytes("vit_tiny_patch16_224", 3),
                           name="vit", classes=b"x\ny\nz\n")
    assert response.status_code == 201, response.content
    model = response.json()
    assert model["family"] == "vit" and model["default_layers"] == {"tokens": "blocks.11.norm1"}
    methods = {m["key"]: m for m in alice_api.get(f"/api/models/{model['id']}/methods/").json()}
    assert methods["gradcam"]["reason_unavailable"] == ""
    assert "CNN models only" in methods["layercam"]["reason_unavailable"]
    image = alice_api.post("/api/images/", {"sample": "chelsea"}, format="json").json()
    accepted = alice_api.post("/api/explanation-sets/", {"model": model["id"], "image": image["id"]}, format="json")
    run_jobs([job_id_from(u) for u in accepted.json()["jobs"]])
    refused = alice_api.post(f"{accepted.json()['url']}maps/", {"target": 0, "methods": [{"key": "layercam"}]},
                             format="json")
    assert refused.status_code == 400 and "CNN models only" in refused.json()["detail"]
    maps = alice_api.post(f"{accepted.json()['url']}maps/", {"target": 1, "methods": [{"key": "gradcam"}]},
                          format="json")
    [job] = run_jobs([job_id_from(u) for u in maps.json()["jobs"]])
    assert job.status == "done", job.error
    assert job.manifest["layer"] == "blocks.11.norm1" and job.manifest["model_family"] == "vit"


def test_operators_import_builtin_weights(alice_api, alice, builtin_models, tmp_path, monkeypatch):
    monkeypatch.setenv("SALIENCY_WEIGHTS_DIR", str(tmp_path))  # keep the machine's weights folder untouched
    resnet = builtin_models["resnet18"]
    weights = state_dict_bytes("resnet18", 1000)
    refused = alice_api.post(f"/api/models/{resnet.pk}/weights/", {"weights": upload("r.pth", weights)},
                             format="multipart")
    assert refused.status_code == 403
    alice.is_staff = True
    alice.save()
    wrong = alice_api.post(f"/api/models/{resnet.pk}/weights/",
                           {"weights": upload("r.pth", state_dict_bytes("mobilenet_v2", 1000))}, format="multipart")
    assert wrong.status_code == 400 and "do not fit" in wrong.json()["detail"]
    ok = alice_api.post(f"/api/models/{resnet.pk}/weights/", {"weights": upload("r.pth", weights)}, format="multipart")
    assert ok.status_code == 200, ok.content
    assert ok.json()["weights_present"] is True
    assert ok.json()["weights_sha256"] == zoo.sha256_of(tmp_path / "resnet18.safetensors")


def test_deleting_an_image_removes_its_sets_and_files(alice_api, bob_api, predicted_set,
                                                      django_capture_on_commit_callbacks):
    from explain.models import ExplanationSet, InputImage

    maps = alice_api.post(f"{predicted_set['url']}maps/", {"target": 3, "methods": [{"key": "xgradcam"}]},
                          format="json")
    [job] = run_jobs([job_id_from(u) for u in maps.json()["jobs"]])
    image = InputImage.objects.get(pk=predicted_set["image"]["id"])
    files = [Path(image.file.path), Path(image.display_file.path), Path(job.map_file.path), Path(job.raw_file.path)]
    assert all(f.is_file() for f in files)
    assert bob_api.delete(f"/api/images/{image.pk}/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.delete(f"/api/images/{image.pk}/").status_code == 204
    assert not ExplanationSet.objects.filter(pk=predicted_set["id"]).exists()
    assert not any(f.exists() for f in files)


def test_jobs_list_filters_by_ids(alice_api, bob_api, predicted_set):
    maps = alice_api.post(f"{predicted_set['url']}maps/", {"target": 3, "methods": [
        {"key": "gradcam"}, {"key": "xgradcam"}, {"key": "layercam"}]}, format="json")
    ids = [job_id_from(u) for u in maps.json()["jobs"]]
    listed = alice_api.get(f"/api/jobs/?ids={ids[0]},{ids[2]}").json()["results"]
    assert sorted(j["id"] for j in listed) == sorted([ids[0], ids[2]])
    assert all(j["status"] == "queued" for j in listed)
    assert bob_api.get(f"/api/jobs/?ids={ids[0]}").json()["results"] == []
    assert alice_api.get("/api/jobs/?ids=1,x").status_code == 400


def test_a_maps_answer_lists_its_jobs_with_the_lists_version(alice_api, predicted_set):
    maps = alice_api.post(f"{predicted_set['url']}maps/", {"target": 3, "methods": [
        {"key": "gradcam"}, {"key": "xgradcam", "enhance": True}]}, format="json").json()
    ids = [job_id_from(u) for u in maps["jobs"]]
    assert [row["id"] for row in maps["results"]] == ids
    assert all(row["status"] == "queued" and row["map_url"] is None for row in maps["results"])
    listed = alice_api.get(f"/api/jobs/?ids={','.join(map(str, ids))}").json()
    assert maps["version"] == listed["version"]
    assert [r["method_key"] for r in maps["results"]] == ["gradcam", "xgradcam"]
