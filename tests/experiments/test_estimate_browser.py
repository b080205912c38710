"""The new-run form shows the run's estimate before it is submitted, and follows the form: in
headless Chromium against the live server (no run is submitted, so no worker is needed)."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from experiments.models import Experiment
from tests.support import PASSWORD, make_user

from .test_browser import plain_static  # noqa: F401  (a fixture, used by name)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("plain_static")]

def doc_shot(page, name: str, selector: str | None = None) -> None:
    """With ``SCREENSHOTS_DIR`` set, save the 1280×800 viewport there (``selector`` scrolled into
    view first) as a 256-colour PNG, as the other pages' screenshots in docs/screenshots are."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if not folder:
        return
    from PIL import Image

    if selector:
        page.eval_on_selector(selector, "el => el.scrollIntoView({block: 'center'})")
    else:
        page.evaluate("() => window.scrollTo(0, 0)")
    image = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    Path(folder).mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(Path(folder) / f"{name}.png", optimize=True)


READY = "() => document.querySelector('[data-testid=run-estimate]').dataset.state === 'ready'"
FAILED = "() => document.querySelector('[data-testid=run-estimate]').dataset.state === 'error'"


def _log_in(page, base, name):
    make_user(name)
    page.goto(f"{base}/login/")
    page.fill("#id_username", name)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{base}/experiments/")


def test_the_estimate_follows_the_form_and_names_what_is_wrong(live_server, lite0, page):
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    # The refused estimates below answer 400 on purpose; any other console error (a CSP refusal,
    # a script error) is a problem.
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" and "status of 400" not in message.text else None)
    _log_in(page, live_server.url, "esther")
    assert "Choose at least one method" in page.inner_text("[data-testid=estimate-text]")

    page.check(".method-pick[value=gradcam]")
    assert "Choose at least one protocol" in page.inner_text("[data-testid=estimate-text]")
    page.check(".protocol-pick[value='torchray-pointing-v1']")
    page.wait_for_function(READY)
    text = page.inner_text("[data-testid=estimate-text]")
    # the default localisation set has 12 images
    assert re.fullmatch(r"About \d+ (s|min) on one worker \(12 images × 1 method × 1 protocol\)\.", text), text
    assert page.locator("#estimate-basis tbody tr").count() == 1
    assert "Grad-CAM" in page.text_content("#estimate-basis tbody")

    # The number shown is the API's for the same body.
    answer = page.evaluate("""async () => {
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const body = {model: parseInt(document.querySelector('#run-model').value, 10),
                      dataset: {kind: 'sample-localisation', paths: {}, subset: {mode: 'all'}},
                      methods: [{key: 'gradcam', enhance: false}], protocols: ['torchray-pointing-v1'], seed: 0};
        const r = await fetch('/api/experiments/estimate/', {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json', 'X-CSRFToken': token}, body: JSON.stringify(body)});
        return r.json();
    }""")
    shown = float(page.get_attribute("[data-testid=run-estimate]", "data-seconds"))
    assert shown == pytest.approx(answer["estimated_seconds"])

    # More methods and fewer images: the line follows without a submit.
    page.check(".method-pick[value=baseline_centre]")
    page.check(".method-enhance[data-key=gradcam]")
    page.select_option("#subset-mode", "first")
    page.fill("#subset-n", "2")
    page.wait_for_function("() => document.querySelector('[data-testid=estimate-text]').textContent.includes('2 images')")
    page.wait_for_function(READY)
    assert "(2 images × 3 methods × 1 protocol)" in page.inner_text("[data-testid=estimate-text]")
    assert page.locator("#estimate-basis tbody tr").count() == 3
    page.fill("#run-name", "Grad-CAM vs the centre prior, pointing game")
    page.wait_for_function(READY)
    doc_shot(page, "experiments", "[data-testid=run-estimate]")

    # A request the server refuses: its reason, in words, in place of the estimate.
    page.fill("#subset-n", "500")
    page.wait_for_function(FAILED)
    assert "cannot take 500" in page.inner_text("[data-testid=estimate-text]")
    page.fill("#subset-n", "2")
    page.select_option("#run-dataset", "sample-classification")
    page.wait_for_function(FAILED)
    assert "needs boxes or masks" in page.inner_text("[data-testid=estimate-text]")
    assert Experiment.objects.count() == 0
    assert not problems, problems
