"""The experiments pages in headless Chromium against the live server and a real worker:
submit a small run, watch the progress reach 100 %, read the table and a plot, drill down,
export, and open the share link logged out."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support import PASSWORD, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def shot(page, name: str) -> None:
    """With ``SCREENSHOTS_DIR`` set, save the page (full height) there."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture()
def plain_static(settings):
    # The live server finds static files through the finders, which know no hashed names.
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


def test_submit_watch_read_export_and_share_a_run(live_server, celery_worker, lite0, plain_static, page, browser):
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    make_user("erin")
    base = live_server.url
    page.goto(f"{base}/login/")
    page.fill("#id_username", "erin")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{base}/experiments/")
    assert page.locator("nav a.active").inner_text() == "Experiments"

    page.fill("#run-name", "browser run")
    page.select_option("#subset-mode", "first")
    page.fill("#subset-n", "2")
    page.check(".method-pick[value=gradcam]")
    page.check(".method-pick[value=baseline_centre]")
    page.click("[data-testid=submit-run]")
    assert "choose at least one protocol" in page.inner_text("[data-testid=form-error]")
    page.check(".protocol-pick[value='torchray-pointing-v1']")
    page.check(".protocol-pick[value='chefer-segmentation-v1']")
    shot(page, "experiments-form")
    page.click("[data-testid=submit-run]")
    page.wait_for_url(re.compile(r"/experiments/\d+/$"))
    assert page.inner_text("[data-testid=estimate]").endswith(" s")

    page.wait_for_function("() => document.querySelector('[data-testid=run-status]').textContent === 'done'", timeout=120_000)
    assert "4 / 4" in page.inner_text("[data-testid=progress-text]")
    assert "100 %" in page.inner_text("[data-testid=progress-text]")
    # opened while the run was queued: the actual time shows without a reload
    assert re.fullmatch(r"· actual \d+ s", page.inner_text("[data-testid=actual]").strip())
    table = page.locator("table.results[data-protocol='torchray-pointing-v1']")
    assert table.locator("tbody tr").count() == 2
    assert "Grad-CAM" in table.inner_text() and "Centre map" in table.inner_text()
    assert table.locator("td.best").count() >= 1
    assert "tolerance=15" in page.inner_text("[data-testid=protocol-torchray-pointing-v1] .protocol-params")
    assert page.locator("[data-testid=protocol-torchray-pointing-v1] svg.chart rect").count() > 2
    page.wait_for_selector(".drill-card canvas")
    assert page.locator(".drill-card").count() >= 4      # 2 methods × 2 protocols, ≥ 1 class each
    # Each card's canvas takes the image's size once the image and the map are drawn.
    page.wait_for_function("() => [...document.querySelectorAll('.drill-card canvas')].every(c => c.width === 224)")

    shot(page, "experiment-run")
    with page.expect_download() as download:
        page.click("[data-testid=export-txt]")
    text = open(download.value.path(), encoding="utf-8").read()
    assert "browser run" in text and "chefer-segmentation-v1" in text and lite0.weights_sha256 in text

    page.click("[data-testid=share]")
    page.wait_for_function("() => document.querySelector('[data-testid=share-url]').value.includes('/s/')")
    link = page.input_value("[data-testid=share-url]")
    public = browser.new_context().new_page()
    try:
        public.goto(link)
        public.wait_for_selector("table.results[data-protocol='chefer-segmentation-v1'] tbody tr")
        assert "browser run" in public.inner_text("[data-testid=run-name]")
        assert public.locator("[data-testid=cancel]").count() == 0
    finally:
        public.context.close()
    # The comparison view draws the same tables for the runs picked (one here).
    run_id = re.search(r"/experiments/(\d+)/$", page.url).group(1)
    page.goto(f"{base}/experiments/")
    page.check(f".compare-pick[value='{run_id}']")
    page.click("[data-testid=compare]")
    page.wait_for_selector("[data-testid=compare-results] table.results[data-protocol='torchray-pointing-v1'] tbody tr")
    shot(page, "experiments-compare")
    assert "browser run" in page.inner_text("[data-testid=compare-results]")
    assert not errors, errors
