"""Server-rendered pages through Django's test client: forms, redirects, privacy."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from explain.models import ClassifierModel, MethodSetting
from sharing.models import Share

from .conftest import state_dict_bytes

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/explain/", "/segment/", "/models/", "/settings/", "/shares/", "/account/"])
def test_pages_need_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("url, text", [
    ("/explain/", "Predict an image"), ("/segment/", "Keep the top"), ("/models/", "Upload a model"),
    ("/settings/", "Method settings"), ("/shares/", "Shared links"),
])
def test_pages_render(client, alice, lite0, url, text):
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 200 and text in response.content.decode()


def test_workbench_lists_models_and_disables_missing_weights(client, alice, builtin_models):
    client.force_login(alice)
    page = client.get("/explain/").content.decode()
    for row in builtin_models.values():
        assert row.name in page
        if not row.weights_present:
            assert f'value="{row.pk}" data-family="{row.family}" disabled' in page


def test_models_page_upload_rename_delete(client, alice, bob):
    client.force_login(alice)
    response = client.post("/models/", {
        "name": "voc", "architecture": "mobilenet_v2",
        "weights": SimpleUploadedFile("w.pth", state_dict_bytes("mobilenet_v2", 2)),
        "class_names": SimpleUploadedFile("c.txt", b"yes\nno\n")})
    assert response.status_code == 302
    model = ClassifierModel.objects.get(owner=alice, name="voc")
    assert model.class_names == ["yes", "no"]
    assert "voc" in client.get("/models/").content.decode()
    # Bob cannot rename or delete it, and does not see it.
    client.force_login(bob)
    assert "voc" not in client.get("/models/").content.decode()
    assert client.post(f"/models/{model.pk}/rename/", {"name": "mine"}).status_code == 404
    assert client.post(f"/models/{model.pk}/delete/").status_code == 404
    client.force_login(alice)
    client.post(f"/models/{model.pk}/rename/", {"name": "voc-2007"})
    model.refresh_from_db()
    assert model.name == "voc-2007"
    client.post(f"/models/{model.pk}/delete/")
    assert not ClassifierModel.objects.filter(pk=model.pk).exists()


def test_settings_form_validates_saves_and_resets(client, alice, lite0):
    client.force_login(alice)
    url = f"/settings/?model={lite0.pk}&method=groupcam"
    form = client.get(url).content.decode()
    assert 'name="groups"' in form and 'min="1"' in form and 'max="4096"' in form
    assert '<option value="bn2" selected>bn2 (default)</option>' in form
    # the batch size is left to the worker's device: an empty field, its help says what it becomes
    assert 'name="batch_size" id="p-batch_size" value=""' in form and "8 on a CPU (or the model&#x27;s own number), 64 on a GPU" in form
    bad = client.post(url, {"model": lite0.pk, "method": "groupcam", "layer": "bn2", "groups": "0",
                            "percentile": "70", "blur_kernel": "51", "blur_sigma": "50", "batch_size": "64"})
    assert bad.status_code == 200 and "must be &gt;= 1" in bad.content.decode()
    assert not MethodSetting.objects.exists()
    ok = client.post(url, {"model": lite0.pk, "method": "groupcam", "layer": "blocks.6", "groups": "8",
                           "percentile": "70", "blur_kernel": "51", "blur_sigma": "50", "batch_size": "",
                           "enhance_window": "64", "enhance_stride": "32", "enhance_radius": "35",
                           "enhance_window_batch": "25"})
    assert ok.status_code == 302
    setting = MethodSetting.objects.get(owner=alice, model=lite0, method_key="groupcam")
    assert setting.params["groups"] == 8 and setting.params["layer"] == "blocks.6"
    assert "batch_size" not in setting.params      # empty: the device's default, not a stored number
    assert setting.enhance_params["window"] == 64
    page = client.get(url).content.decode()
    assert "saved settings in use" in page and 'value="8"' in page
    client.post(url, {"model": lite0.pk, "method": "groupcam", "reset": "1"})
    assert not MethodSetting.objects.exists()


def test_shares_page_revokes_only_own(client, alice, bob, lite0):
    from explain.services import image_create
    from explain.models import ExplanationSet
    from sharing.services import share_create

    image = image_create(owner=alice, sample="chelsea")
    explanation_set = ExplanationSet.objects.create(owner=alice, model=lite0, image=image)
    share = share_create(owner=alice, view="explanation", object_id=explanation_set.pk)
    assert client.get(f"/s/{share.token}/").status_code == 200
    assert "Saliency maps" in client.get(f"/s/{share.token}/").content.decode()
    client.force_login(bob)
    assert client.post(f"/shares/{share.pk}/revoke/").status_code == 404
    client.force_login(alice)
    assert share.title in client.get("/shares/").content.decode()
    client.post(f"/shares/{share.pk}/revoke/")
    share.refresh_from_db()
    assert share.revoked_at is not None
    client.logout()
    assert client.get(f"/s/{share.token}/").status_code == 404
    assert Share.objects.active().count() == 0


def test_static_modules_are_served_with_their_imports(client, alice, lite0):
    """The page's module is served under its hashed name, and the modules it imports by plain name too."""
    import re

    client.force_login(alice)
    page = client.get("/explain/").content.decode()
    src = next(s for s in re.findall(r'<script type="module" src="([^"]+)"', page) if "workbench" in s)
    assert re.search(r"workbench\.[0-9a-f]{12}\.js$", src), src
    module = client.get(src)
    assert module.status_code == 200 and "javascript" in module["Content-Type"]
    body = b"".join(module.streaming_content).decode() if module.streaming else module.content.decode()
    for name in re.findall(r'from "\./([\w.]+)"', body):
        imported = client.get(f"/static/frontend/js/{name}")
        assert imported.status_code == 200, name


@pytest.mark.parametrize("family", ["cnn", "vit"])
def test_settings_form_renders_for_every_method(client, alice, builtin_models, family):
    """Every registered method's parameter schema becomes a form, whichever model family."""
    from explain.core import registry

    model = next(r for r in builtin_models.values() if r.family == family)
    client.force_login(alice)
    for key in registry.method_keys():
        cls = registry.get_method_class(key)
        page = client.get(f"/settings/?model={model.pk}&method={key}")
        assert page.status_code == 200, key
        text = page.content.decode()
        for param in cls.params:
            assert f'name="{param.name}"' in text, (key, param.name)
        if family not in cls.families:
            assert "models only" in text, key


def test_reopening_a_set_is_private(client, alice, bob, lite0):
    from explain.models import ExplanationSet
    from explain.services import image_create

    explanation_set = ExplanationSet.objects.create(owner=alice, model=lite0,
                                                    image=image_create(owner=alice, sample="rocket"))
    client.force_login(alice)
    page = client.get(f"/explain/?set={explanation_set.pk}").content.decode()
    assert f"/api/explanation-sets/{explanation_set.pk}/" in page and "Rocket launch" in page
    client.force_login(bob)
    assert client.get(f"/explain/?set={explanation_set.pk}").status_code == 404
    assert client.get("/explain/?set=abc").status_code == 404
    assert f"?set={explanation_set.pk}\"" not in client.get("/explain/").content.decode()
    client.force_login(alice)
    assert f"?set={explanation_set.pk}\"" in client.get("/explain/").content.decode()
