"""The run page's per-image drill-down in headless Chromium: class names instead of indices, the
ground-truth boxes and masks drawn over the picture, and the pointing game's maximum marked green
for a hit, red for a miss. The run is computed in the test's process (no worker needed)."""
from __future__ import annotations

import pytest

from experiments import services
from experiments.models import Experiment
from explain.core.zoo import imagenet_class_names
from tests.support import PASSWORD, make_user

from .conftest import LOCALISATION
from .test_browser import plain_static  # noqa: F401  (a fixture, used by name)
from .test_estimate_browser import doc_shot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("plain_static")]

PIXEL = """([selector, x, y]) => {
    const canvas = document.querySelector(selector);
    return Array.from(canvas.getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3));
}"""


def _near(rgb, target, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, target))


def test_the_drill_down_names_classes_draws_the_truth_and_marks_hits(live_server, lite0, page):
    user = make_user("dora")
    run = services.experiment_create(
        owner=user, name="drill in the browser", model=lite0, dataset={**LOCALISATION, "subset": {"mode": "first", "n": 2}},
        methods=["gradcam", "baseline_centre"], protocols=["torchray-pointing-v1"], submit=False)
    services.experiment_run_sync(experiment=run)
    run.refresh_from_db()
    assert run.status == Experiment.Status.DONE
    records = list(run.records.filter(image_index=0).order_by("method_slot", "class_id"))
    names = imagenet_class_names()
    sample = services.dataset_open(spec=run.dataset)[0]

    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "dora")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/experiments/{run.pk}/")
    page.wait_for_function("() => { const c = [...document.querySelectorAll('.drill-card canvas')];"
                           " return c.length > 0 && c.every(x => x.dataset.drawn === '1'); }")
    cards = page.locator(".drill-card")
    assert cards.count() == len(records)

    truth_line = page.inner_text("[data-testid=drill-truth]")
    for class_id in sample.labels:
        assert f"{names[class_id]} ({class_id})" in truth_line

    seen = set()
    for index in (1, 0):       # a miss on the second image (the run's pointing score is below 100)
        page.fill("#image-index", str(index))
        page.dispatch_event("#image-index", "change")
        page.wait_for_function(f"() => document.querySelector('#image-key').textContent === '{run.dataset_info['keys'][index]}'"
                               " && [...document.querySelectorAll('.drill-card canvas')].every(x => x.dataset.drawn === '1')")
        records = list(run.records.filter(image_index=index).order_by("method_slot", "class_id"))
        cards = page.locator(".drill-card")
        assert cards.count() == len(records)
        for i, rec in enumerate(records):
            card = cards.nth(i)
            assert f"explains {names[rec.class_id]} ({rec.class_id})" in card.inner_text()
            verdict = "hit" if rec.data["score"] == 1.0 else "miss"
            seen.add(verdict)
            assert card.locator(".verdict").inner_text() == verdict
            canvas = card.locator("canvas")
            assert canvas.get_attribute("data-verdict") == verdict
            assert int(canvas.get_attribute("data-boxes")) >= 1
            x, y = (float(v) for v in canvas.get_attribute("data-point").split(","))
            colour = page.evaluate(PIXEL, [f".drill-card:nth-child({i + 1}) canvas", x, y])
            assert _near(colour, (0x16, 0xA3, 0x4A) if verdict == "hit" else (0xDC, 0x26, 0x26)), colour
        if index == 1:
            doc_shot(page, "experiment-drilldown", "[data-testid=drilldown]")
    assert seen == {"hit", "miss"}
    records = list(run.records.filter(image_index=0).order_by("method_slot", "class_id"))
    cards = page.locator(".drill-card")

    # The class's box is outlined where the API places it.
    truth = page.evaluate(f"async () => (await fetch('/api/experiments/{run.pk}/images/0/truth/"
                          "?protocol=torchray-pointing-v1')).json()")
    first = records[0]
    box = next(o["box"] for o in truth["objects"] if o["class_id"] == first.class_id)
    edge = page.evaluate(PIXEL, [".drill-card:nth-child(1) canvas", (box[0] + box[2]) / 2, box[3] - 0.5])
    point = [float(v) for v in cards.nth(0).locator("canvas").get_attribute("data-point").split(",")]
    if abs(point[1] - box[3]) > 25:        # the verdict's ring is elsewhere
        assert _near(edge, (6, 182, 212), 60), edge
    doc_shot(page, "experiment-run")

    page.uncheck("#show-truth")
    page.wait_for_function("() => [...document.querySelectorAll('.drill-card canvas')]"
                           ".every(c => c.dataset.drawn === '1' && c.dataset.boxes === '0')")
    assert not problems, problems
