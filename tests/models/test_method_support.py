"""Which methods a model can run comes from the engine's reasons for its real architecture,
recorded on the model's row: the API lists them, a job for an unsupported method is refused
with that reason, and the Settings page greys those methods out, opens on one the model can
run, marks models without weights and lets the layer list be searched."""
from __future__ import annotations

import re

import pytest

from explain.core import method_support, random_classifier, registry
from explain.models import ClassifierModel
from explain.services import image_create
from tests.support import PASSWORD, make_user


def listing(api, model) -> dict[str, dict]:
    answer = api.get(f"/api/models/{model.pk}/methods/")
    assert answer.status_code == 200, answer.content
    return {m["key"]: m for m in answer.json()}


@pytest.mark.parametrize("name", ["efficientnet_lite0", "vit_b_16"])
def test_reasons_are_the_engines_for_the_architecture(alice_api, builtin_models, name):
    row = builtin_models[name]
    methods = listing(alice_api, row)
    engine = method_support(random_classifier(name))
    assert set(methods) == set(engine) == set(registry.method_keys())
    for key, reason in engine.items():
        if reason is None:
            assert methods[key]["reason_unsupported"] == "", key
        else:
            label = registry.get_method_class(key).label or key
            assert methods[key]["reason_unsupported"] == f"{label} {reason.replace(name, row.name)}.", key
            assert methods[key]["reason_unavailable"] == methods[key]["reason_unsupported"]
    row.refresh_from_db()
    assert row.method_support == {k: (r or "").replace(name, row.name) for k, r in engine.items()}


def test_listing_reads_the_recorded_reasons(alice_api, lite0):
    listing(alice_api, lite0)                       # records them
    lite0.refresh_from_db()
    support = dict(lite0.method_support)
    support["gradcam"] = "needs a sign from above"  # what the row says is what the API says
    ClassifierModel.objects.filter(pk=lite0.pk).update(method_support=support)
    assert listing(alice_api, lite0)["gradcam"]["reason_unavailable"] == "Grad-CAM needs a sign from above."


def test_a_job_for_an_unsupported_method_is_refused_with_the_reason(alice_api, alice, lite0):
    image = image_create(owner=alice, sample="chelsea")
    accepted = alice_api.post("/api/explanation-sets/", {"model": lite0.pk, "image": image.pk}, format="json")
    assert accepted.status_code == 202
    refused = alice_api.post(f"{accepted.json()['url']}maps/",
                             {"target": 281, "methods": [{"key": "gradcam"}, {"key": "attention_rollout"}]},
                             format="json")
    assert refused.status_code == 400
    assert "supports VIT models only" in refused.content.decode()
    assert not lite0.explanation_sets.get().jobs.filter(kind="explain").exists()   # none of the two queued


def test_settings_page_greys_out_unsupported_methods_and_opens_on_a_runnable_one(client, alice, builtin_models):
    lite0, vit = builtin_models["efficientnet_lite0"], builtin_models["vit_b_16"]
    client.force_login(alice)
    page = client.get(f"/settings/?model={lite0.pk}").content.decode()
    first_runnable = next(k for k, r in method_support(random_classifier("efficientnet_lite0")).items() if r is None)
    assert re.search(rf'<option value="{first_runnable}" selected', page)
    assert re.search(r'<option value="attention_rollout"[^>]* disabled title="Attention Rollout supports VIT', page)
    assert "(not for this model)" in page
    # The picker moves to a ViT while a CNN-only method is open: the page opens on a ViT method.
    answer = client.get(f"/settings/?pick=1&model={vit.pk}&method=layercam")
    assert answer.status_code == 302
    method = re.search(r"method=(\w+)", answer["Location"]).group(1)
    assert method in registry.methods_for("vit") and method != "layercam"
    page = client.get(answer["Location"]).content.decode()
    assert "LayerCAM supports CNN models only" in page and "instead" in page
    # A direct link still shows the asked-for method, with why it cannot run.
    page = client.get(f"/settings/?model={vit.pk}&method=layercam").content.decode()
    assert "LayerCAM supports CNN models only" in page and 'name="layer"' in page


def test_settings_page_marks_models_without_weights(client, alice, builtin_models):
    missing = next((r for r in builtin_models.values() if not r.weights_present), None)
    if missing is None:
        pytest.skip("every built-in's weights are on this machine")
    client.force_login(alice)
    page = client.get("/settings/").content.decode()
    assert re.search(rf'<option value="{missing.pk}"[^>]*data-weights="missing">{re.escape(missing.name)} · weights missing',
                     page)
    page = client.get(f"/settings/?model={missing.pk}").content.decode()
    assert 'data-testid="weights-missing"' in page


def test_layer_list_marks_the_default_and_filters_in_the_browser(live_server, builtin_models, page, settings):
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    lite0 = builtin_models["efficientnet_lite0"]
    make_user("dora")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "dora")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/explain/"))
    page.goto(f"{live_server.url}/settings/?model={lite0.pk}&method=layercam")
    lite0.refresh_from_db()
    layers = page.locator("[data-testid=param-layer] option")
    total = layers.count()
    assert total == len(lite0.layers) > 100
    assert page.locator("[data-testid=param-layer]").get_attribute("data-default") == "bn2"
    assert page.locator("[data-testid=param-layer] option[value=bn2]").inner_text() == "bn2 (default)"
    page.fill("[data-testid=filter-layer]", "blocks.5 conv_pw")
    visible = page.eval_on_selector_all("[data-testid=param-layer] option", "os => os.filter(o => !o.hidden).map(o => o.value)")
    assert "bn2" in visible                                 # the default stays in view
    assert {v for v in visible if v != "bn2"} == {n for n in lite0.layers if "blocks.5" in n and "conv_pw" in n}
    assert page.inner_text("[data-testid=layer-count]") == f"{len(visible)} of {total} layers"
    page.select_option("[data-testid=param-layer]", "blocks.5.0.conv_pw")
    page.click("[data-testid=settings-save]")
    page.wait_for_selector("[data-testid=saved-badge]")
    assert page.locator("[data-testid=param-layer]").input_value() == "blocks.5.0.conv_pw"
    assert errors == []
