"""The Explain page: what a map covers, plain and enhanced maps side by side, methods grouped by
family, colour bars and scaling, queue positions on queued cards.

API tests run the jobs here with the real task function; browser tests drive the page in headless
Chromium against the live server (with the real Celery worker where maps must be computed).
"""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from explain import tasks
from explain.core import imaging, zoo
from explain.core.engine import explain
from explain.core.methods.base import METHOD_GROUPS
from explain.core.registry import get_method_class, method_keys
from explain.models import ExplanationSet, InputImage, Job

from tests.support import PASSWORD

# The coffee sample is 600×400. The centre crop of the standard preprocessing, by hand: the
# shorter side 400 → 256 (factor 0.64) gives 384×256; the 224×224 crop starts at (80, 16), which is
# (125, 25) in the original; it ends at (304, 240) → (475, 375).
COFFEE_CROP = [125.0, 25.0, 475.0, 375.0]


def run_jobs(ids) -> list[Job]:
    for job_id in ids:
        tasks.run_job(job_id)
    return [Job.objects.get(pk=i) for i in ids]


def job_id(url: str) -> int:
    return int(url.rstrip("/").split("/")[-1])


@pytest.fixture()
def plain_static(settings):
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


@pytest.fixture()
def coffee_set(alice_api, lite0):
    image = alice_api.post("/api/images/", {"sample": "coffee"}, format="json").json()
    accepted = alice_api.post("/api/explanation-sets/", {"model": lite0.pk, "image": image["id"]}, format="json")
    [predict] = run_jobs([job_id(u) for u in accepted.json()["jobs"]])
    assert predict.status == "done", predict.error
    return alice_api.get(accepted.json()["url"]).json()


def raw_download(api, url):
    response = api.get(url)
    assert response.status_code == 200
    return response, np.load(io.BytesIO(b"".join(response.streaming_content)))


# -- what a map covers (API) ----------------------------------------------------------------

def test_a_map_says_which_part_of_the_image_it_covers(alice_api, coffee_set):
    url = f"{coffee_set['url']}maps/"
    target = coffee_set["predictions"][0]["index"]
    crop = alice_api.post(url, {"target": target, "methods": [{"key": "gradcam"}]}, format="json")
    whole = alice_api.post(url, {"target": target, "methods": [{"key": "gradcam"}], "region": "whole"}, format="json")
    assert crop.status_code == whole.status_code == 202
    crop_job, whole_job = run_jobs([job_id(crop.json()["jobs"][0]), job_id(whole.json()["jobs"][0])])
    assert crop_job.status == whole_job.status == "done", (crop_job.error, whole_job.error)

    crop_body = alice_api.get(crop.json()["jobs"][0]).json()
    whole_body = alice_api.get(whole.json()["jobs"][0]).json()
    assert crop_body["region"] == "crop" and whole_body["region"] == "whole"
    assert crop_body["region_box"] == pytest.approx([125 / 600, 25 / 400, 475 / 600, 375 / 400], abs=1e-4)
    assert whole_body["region_box"] == [0, 0, 1, 1]

    # The .npy says what it is: name and headers; the crop's box in original pixels.
    response, raw = raw_download(alice_api, crop_body["raw_url"])
    assert raw.shape == (224, 224)
    assert "centre-crop" in response["Content-Disposition"]
    assert response["X-Saliency-Region"] == "centre-crop"
    assert [float(v) for v in response["X-Saliency-Box"].split(",")] == COFFEE_CROP
    response, raw_whole = raw_download(alice_api, whole_body["raw_url"])
    # The whole image, shorter side to the model's 224, nothing cut: 336×224 for 600×400.
    assert raw_whole.shape == (224, 336)
    assert "whole-image" in response["Content-Disposition"] and response["X-Saliency-Region"] == "whole-image"
    assert [float(v) for v in response["X-Saliency-Box"].split(",")] == [0, 0, 600, 400]

    # The whole-image map is the engine's map of the uncropped input.
    clf = zoo.load_classifier("efficientnet_lite0")
    picture = imaging.load_image(InputImage.objects.get(pk=coffee_set["image"]["id"]).file.path)
    x, geometry = imaging.preprocess(picture, clf, region="whole")
    assert tuple(x.shape) == (3, 224, 336) and geometry.box() == (0, 0, 600, 400)
    [expected] = explain(clf, x[None], "gradcam", targets=[target])
    assert np.allclose(raw_whole, expected.saliency.numpy(), atol=1e-5)

    # On the page's map (display size) the crop's map is zero outside the box; the whole one is not.
    width, height = crop_body["map_width"], crop_body["map_height"]
    shown = np.frombuffer(alice_api.get(crop_body["map_url"]).content, dtype="<f4").reshape(height, width)
    left = int(COFFEE_CROP[0] / 600 * width)
    assert shown[:, : left - 2].max() == 0 and shown[:, left + 2:].max() > 0
    shown_whole = np.frombuffer(alice_api.get(whole_body["map_url"]).content, dtype="<f4").reshape(height, width)
    assert shown_whole.shape == shown.shape


def test_the_whole_image_is_refused_for_a_vit_and_an_elongated_image(alice_api, alice, builtin_models, coffee_set):
    vit = builtin_models["vit_b_16"]
    vit.weights_present = True  # the request is refused before any weights are read
    vit.save(update_fields=["weights_present"])
    image = InputImage.objects.get(pk=coffee_set["image"]["id"])
    vit_set = ExplanationSet.objects.create(owner=alice, model=vit, image=image)
    answer = alice_api.post(f"/api/explanation-sets/{vit_set.pk}/maps/",
                            {"target": 1, "methods": [{"key": "gradcam"}], "region": "whole"}, format="json")
    assert answer.status_code == 400
    assert "ViT" in answer.json()["detail"] and "centre crop" in answer.json()["detail"]
    assert not vit_set.jobs.exists()

    long_image = InputImage.objects.create(owner=alice, name="strip", file=image.file.name,
                                           display_file=image.display_file.name, width=1000, height=200,
                                           display_width=500, display_height=100, sha256="0" * 64)
    strip = ExplanationSet.objects.create(owner=alice, model=builtin_models["efficientnet_lite0"], image=long_image)
    answer = alice_api.post(f"/api/explanation-sets/{strip.pk}/maps/",
                            {"target": 1, "methods": [{"key": "gradcam"}], "region": "whole"}, format="json")
    assert answer.status_code == 400 and "5.0:1" in answer.json()["detail"]
    bad = alice_api.post(f"{coffee_set['url']}maps/",
                         {"target": 1, "methods": [{"key": "gradcam"}], "region": "everything"}, format="json")
    assert bad.status_code == 400 and "region" in bad.json()


def test_an_identical_request_reuses_its_job_and_plain_and_enhanced_are_two(alice_api, coffee_set):
    url = f"{coffee_set['url']}maps/"
    first = alice_api.post(url, {"target": 3, "methods": [{"key": "gradcam"}, {"key": "gradcam", "enhance": True}]},
                           format="json").json()["jobs"]
    assert len(first) == 2 and first[0] != first[1]
    again = alice_api.post(url, {"target": 3, "methods": [{"key": "gradcam"}, {"key": "gradcam"}]},
                           format="json").json()["jobs"]
    assert again == [first[0]]
    other_class = alice_api.post(url, {"target": 4, "methods": [{"key": "gradcam"}]}, format="json").json()["jobs"]
    assert other_class[0] not in first
    # A failed map is made again on request.
    Job.objects.filter(pk=job_id(first[0])).update(status=Job.Status.FAILED, error="worker lost")
    retry = alice_api.post(url, {"target": 3, "methods": [{"key": "gradcam"}]}, format="json").json()["jobs"]
    assert retry[0] not in first
    assert Job.objects.filter(explanation_set_id=coffee_set["id"], kind="explain").count() == 4


def test_every_method_names_a_known_family_in_the_api(alice_api, lite0):
    methods = alice_api.get(f"/api/models/{lite0.pk}/methods/").json()
    assert {m["key"] for m in methods} == set(method_keys())
    for m in methods:
        assert m["group"] in METHOD_GROUPS and m["group"], m["key"]
        assert m["group_label"] == METHOD_GROUPS[m["group"]]
    groups = {m["key"]: m["group"] for m in methods}
    assert groups["gradcam"] == groups["scorecam"] == "cam" and groups["rise"] == "perturbation"
    assert groups["lrp"] == "propagation" and groups["attention_rollout"] == "transformer"


# -- the page ---------------------------------------------------------------------------------

def log_in(page, base, user):
    page.goto(f"{base}/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/explain/"))


def wait_done(page, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#results .card[data-status=done]').length === n", arg=count, timeout=180_000)


def in_viewport(page, selector: str) -> bool:
    return page.eval_on_selector(selector, """e => { const r = e.getBoundingClientRect();
        return r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth && r.height > 0; }""")


# Pixels of a card's canvas against the image underneath: outside the covered box the page must
# show the image dimmed (0.45×), not the colour map's "zero"; on the box's top edge, the white dashes.
REGION_PIXELS = """
async ([index]) => {
  const { loadImagePixels, pixelBox } = await import("/static/frontend/js/mapview.js");
  const card = document.querySelectorAll('#results .card')[index];
  const canvas = card.querySelector('canvas.map');
  const w = canvas.width, h = canvas.height;
  const image = await loadImagePixels(document.getElementById('image-preview').src, w, h);
  const shown = canvas.getContext('2d').getImageData(0, 0, w, h).data;
  const box = pixelBox(JSON.parse(card.dataset.box), w, h);
  let worst = 0;
  for (let y = 0; y < h; y += 7) for (let x = 0; x < Math.max(1, box.x0 - 4); x += 3) {
    const p = (y * w + x) * 4;
    for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(shown[p + c] - image[p + c] * 0.45));
  }
  let white = 0;
  const line = Math.max(1, Math.round(Math.min(w, h) / 160));
  for (let x = box.x0; x < box.x1; x++) {
    const p = ((box.y0 + line) * w + x) * 4;
    if (shown[p] > 230 && shown[p + 1] > 230 && shown[p + 2] > 230) white++;
  }
  return { worst, white, edge: box.x1 - box.x0, left: box.x0 };
}
"""


def test_maps_show_their_region_side_by_side_with_colour_bars(live_server, celery_worker, builtin_models,
                                                              plain_static, page, alice):
    base = live_server.url
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, base, alice)
    page.click("button[data-sample=coffee]")
    page.wait_for_selector("#predictions tr >> nth=4", timeout=120_000)

    # Methods grouped by family, in the registry's order; ViT-only methods folded away on a CNN.
    groups = page.eval_on_selector_all("#method-list > .method-group", "gs => gs.map(g => g.dataset.group)")
    assert groups == ["cam", "perturbation", "propagation", "other-models"]
    folded = page.locator("#method-list details.folded")
    assert folded.get_attribute("open") is None and "ViT models only" in folded.locator("summary").text_content()
    vit_only = [k for k in method_keys() if get_method_class(k).families == frozenset({"vit"})]
    assert sorted(folded.locator("li").evaluate_all("ls => ls.map(l => l.dataset.method)")) == sorted(vit_only)
    assert not page.locator("#method-list li[data-method=attention_rollout]").is_visible()
    assert page.locator("#method-list .method-group[data-group=cam] li[data-method=gradcam]").is_visible()
    assert page.locator("#whole-image").is_enabled()

    # Plain and enhanced Grad-CAM in one Generate: two cards, side by side; Generate and the
    # results both on screen afterwards.
    item = page.locator("#method-list li[data-method=gradcam]")
    item.locator("input.pick").check()
    item.locator("input.enhance").check()
    page.locator("[data-testid=generate]").scroll_into_view_if_needed()
    page.click("[data-testid=generate]")
    page.wait_for_selector("#results .card")
    wait_done(page, 2)
    assert in_viewport(page, "[data-testid=generate]") and in_viewport(page, "#results .card")
    cards = page.locator("#results .card")
    assert [(c.get_attribute("data-method"), c.get_attribute("data-enhance")) for c in cards.all()] == [
        ("gradcam", "false"), ("gradcam", "true")]
    first, second = (c.bounding_box() for c in cards.all())
    assert abs(first["y"] - second["y"]) < 1 and second["x"] > first["x"]  # one row

    # The centre crop is outlined, the rest dimmed, and a note says so.
    card = cards.first
    assert json.loads(card.get_attribute("data-box")) == pytest.approx([125 / 600, 25 / 400, 475 / 600, 375 / 400],
                                                                        abs=1e-4)
    pixels = page.evaluate(REGION_PIXELS, [0])
    assert pixels["left"] > 20 and pixels["worst"] <= 2, pixels
    assert pixels["white"] > pixels["edge"] * 0.3, pixels
    assert "centre crop" in card.locator(".region-note").inner_text()
    npy = card.locator(".downloads a", has_text=".npy")
    answer = page.request.get(base + npy.get_attribute("href"))
    assert answer.headers["x-saliency-region"] == "centre-crop"
    assert "centre-crop" in answer.headers["content-disposition"]

    # Colour bars: the map's own maximum at the top of each, then one shared scale.
    jobs = {j.pk: j for j in Job.objects.filter(kind="explain", explanation_set__owner=alice)}
    for c in cards.all():
        job = jobs[int(c.get_attribute("data-job"))]
        assert float(c.get_attribute("data-scale-max")) == pytest.approx(job.map_max, rel=1e-5)
        assert c.locator(".colorbar").is_visible() and c.locator(".colorbar .hi").inner_text() != ""
        assert c.locator(".colorbar .kind").inner_text() == "this map's scale"
    ramp = card.locator("canvas.ramp").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, 256, 1).data.slice(0, 4))")
    assert ramp == [0, 0, 131, 255]  # jet starts dark blue
    page.select_option("#scaling", "shared")
    page.wait_for_function("() => [...document.querySelectorAll('#results .card')].every("
                           "c => c.querySelector('.colorbar .kind').textContent === 'shared scale')")
    shared = {float(c.get_attribute("data-scale-max")) for c in cards.all()}
    assert len(shared) == 1 and shared.pop() == pytest.approx(max(j.map_max for j in jobs.values()), rel=1e-5)
    assert len({j.map_max for j in jobs.values()}) == 2  # two different maxima, so sharing changed one

    # The whole image: a third card, no outline, its note; the earlier cards stay.
    page.check("#whole-image")
    item.locator("input.enhance").uncheck()
    page.click("[data-testid=generate]")
    wait_done(page, 3)
    whole = page.locator("#results .card[data-region=whole]")
    assert whole.count() == 1 and "whole image" in whole.locator(".badges").inner_text()
    assert "whole image" in whole.locator(".region-note").inner_text()
    whole_npy = whole.locator(".downloads a", has_text=".npy").get_attribute("href")
    assert page.request.get(base + whole_npy).headers["x-saliency-region"] == "whole-image"
    assert page.locator("#results .card").count() == 3

    # The same request again makes nothing new: the card is pointed at.
    page.click("[data-testid=generate]")
    page.wait_for_function("() => document.querySelector('[data-testid=generate-note]').textContent.includes('already')")
    assert page.locator("#results .card").count() == 3
    assert Job.objects.filter(kind="explain", explanation_set__owner=alice).count() == 3
    assert not errors, errors


QUEUE_FIELDS = {"present": {"queue_position": 2, "estimate_s": 4.3}, "null": {"queue_position": None, "estimate_s": None},
                "position": {"queue_position": 1}}


def test_queued_cards_show_their_place_in_line(live_server, plain_static, page, alice, builtin_models, monkeypatch):
    """Cards of queued jobs say where the job stands when the job JSON carries ``queue_position``
    and ``estimate_s``, and just "queued" when it does not. The jobs are kept from the broker so
    they stay queued; the fields are set on the server's answers by the test (the page is what
    is tested here, not how the server computes them)."""
    from explain import services

    lite0 = builtin_models["efficientnet_lite0"]
    monkeypatch.setattr(services.jobs, "_enqueue_group", lambda jobs: None)
    image = services.image_create(owner=alice, sample="chelsea")
    explanation_set = services.explanation_set_create(owner=alice, model=lite0, image=image)
    run_jobs([explanation_set.jobs.get().pk])

    mode = {"fields": None}

    def jobs_answer(route):
        response = route.fetch()
        body = response.json()
        for job in body["results"]:
            job.pop("queue_position", None)
            job.pop("estimate_s", None)
            if mode["fields"]:
                job.update(QUEUE_FIELDS[mode["fields"]])
        route.fulfill(response=response, body=json.dumps(body))

    # The jobs list, and the maps request's answer, which carries the list's first rows.
    page.route(re.compile(r".*/api/(jobs/\?ids=|explanation-sets/\d+/maps/).*"), jobs_answer)
    log_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/explain/?set={explanation_set.pk}")
    page.wait_for_selector("#predictions tr >> nth=4")
    page.locator("#method-list li[data-method=gradcam] input.pick").check()
    page.click("[data-testid=generate]")
    runtime = page.locator("#results .card .runtime")
    page.wait_for_function("() => document.querySelector('#results .card[data-status=queued]')")
    page.wait_for_timeout(1500)  # a few polls
    assert runtime.inner_text() == "queued"
    for fields, text in (("present", "queued · 2nd in line · about 4 s"), ("position", "queued · 1st in line"),
                         ("null", "queued")):
        mode["fields"] = fields
        page.wait_for_function("t => document.querySelector('#results .card .runtime').textContent === t",
                               arg=text, timeout=10_000)
    # A queued card shows no empty map frame.
    assert not page.locator("#results .card canvas.map").is_visible()

    # A ViT (its weights marked present, its layers known, so nothing is built): the whole image is
    # offered disabled with the reason, and the CNN-only methods fold away.
    vit = builtin_models["vit_b_16"]
    vit.weights_present, vit.layers = True, ["blocks.11.norm1"]
    vit.save(update_fields=["weights_present", "layers"])
    page.goto(f"{live_server.url}/explain/")
    page.select_option("#model-select", str(vit.pk))
    page.wait_for_function("() => document.querySelector('#method-list details.folded summary')"
                           " && document.querySelector('#method-list details.folded summary').textContent.includes('CNN')")
    assert page.locator("#whole-image").is_disabled()
    assert "position embeddings" in page.inner_text("#region-help")
    cnn_only = [k for k in method_keys() if get_method_class(k).families == frozenset({"cnn"})]
    folded = page.locator("#method-list details.folded li").evaluate_all("ls => ls.map(l => l.dataset.method)")
    assert sorted(folded) == sorted(cnn_only)
