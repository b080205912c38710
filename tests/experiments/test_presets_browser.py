"""Presets in headless Chromium under the site's CSP: queue the bundled preset from the Presets
page on a real worker, watch it finish, and read the ranking, the agreement matrix and the
sentences; and read a preset run's published-vs-ours table with its match/differ marks."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from experiments.core.presets import compare, get_preset
from experiments.models import Experiment
from experiments.services.aggregation import _rankings
from tests.support import PASSWORD, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def shot(page, name: str, part=None) -> None:
    """With ``SCREENSHOTS_DIR`` set, save the 1280×800 view (or just ``part``, a locator) there."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (part or page).screenshot(path=str(Path(folder) / f"{name}.png"))


@pytest.fixture()
def plain_static(settings):
    # The live server finds static files through the finders, which know no hashed names.
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


def _login(page, base, username):
    user = make_user(username)
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    return user


def _watch(page):
    """Collect script errors and CSP violations; the test fails on any."""
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    return errors


def test_queue_the_bundled_preset_and_read_rankings_and_claims(live_server, celery_worker, lite0, plain_static, page,
                                                               settings, tmp_path):
    settings.DATA_ROOTS = [tmp_path]       # no VOC here: its presets say what they need
    errors = _watch(page)
    base = live_server.url
    _login(page, base, "pia")
    page.goto(f"{base}/experiments/presets/")
    card = page.locator("[data-testid=preset-thesis-claims-bundled]")
    assert card.locator("[data-testid=availability]").inner_text() == "ready on this server"
    voc = page.locator("[data-testid=preset-torchray-pointing-voc07]")
    assert voc.locator("[data-testid=availability]").inner_text() == "not available here"
    assert "needs data set PASCAL VOC 2007 test" in voc.inner_text()
    shot(page, "presets")

    card.locator("[data-testid=images]").fill("1")
    for box in card.locator(".method-pick").all():
        if box.get_attribute("value") not in ("gradcam", "msgcam"):
            box.uncheck()
    card.locator("[data-testid=queue]").click()
    page.wait_for_url(re.compile(r"/experiments/\d+/$"))
    page.wait_for_function("() => document.querySelector('[data-testid=run-status]').textContent === 'done'",
                           timeout=600_000)
    run = Experiment.objects.get(owner__username="pia")
    assert run.preset == "thesis-claims-bundled" and run.num_images == 1 and len(run.methods) == 6

    ranking = page.locator("[data-testid=ranking-table]")
    assert ranking.locator("tbody tr").count() == 6
    # method, mean rank, then every column some method has a value in (no "difficult" objects here)
    ranked = [m for m in run.results["rankings"]["metrics"] if run.results["rankings"]["ranks"][m]]
    assert 5 <= len(ranked) <= 7 and ranking.locator("thead th").count() == 2 + len(ranked)
    first = run.results["rankings"]["aggregate"][0]
    assert ranking.locator("tbody tr").first.get_attribute("data-method") == first["method"]
    assert f"{first['mean_rank']:.2f} ± {first['spread']:.2f}" in ranking.locator("tbody tr").first.inner_text()
    matrix = page.locator("[data-testid=agreement-matrix]")
    assert matrix.locator("td.agreement-cell").count() == len(ranked) ** 2
    diagonal = [r for r in (run.results["rankings"]["agreement"][m][m] for m in run.results["rankings"]["metrics"]) if r is not None]
    assert diagonal and matrix.locator("td.agreement-cell", has_text="1.00").count() >= len(diagonal)
    statements = page.locator("[data-testid=preset-statements] li")
    assert statements.count() == 2
    assert statements.nth(0).inner_text() == run.results["preset"]["statements"][0]
    assert re.match(r"MSG-CAM (ranks|ties for) \S+ of 6 on Pointing \(all\)", statements.nth(0).inner_text())
    assert "beat" in statements.nth(0).inner_text() and statements.nth(1).inner_text().startswith("The enhancement improves")
    shot(page, "preset-run")
    shot(page, "preset-run-rankings", page.locator("[data-testid=rankings]"))
    assert not errors, errors


def test_a_preset_run_marks_match_and_differ(live_server, lite0, plain_static, page):
    errors = _watch(page)
    base = live_server.url
    user = _login(page, base, "quinn")
    columns = [{"key": "all", "label": "Pointing (all)", "better": "higher"},
               {"key": "difficult", "label": "Pointing (difficult)", "better": "higher"}]
    rows = [{"slot": i, "method": key, "label": label, "enhance": False, "baseline": key.startswith("baseline_"), "n": 4952,
             "failed": 0, "values": {"all": a, "difficult": d}, "extras": {}}
            for i, (key, label, a, d) in enumerate([("baseline_centre", "Centre map (baseline)", 69.9, 42.4),
                                                     ("rise", "RISE", 84.0, 75.5), ("gradcam", "Grad-CAM", 86.1, 70.0)])]
    block = {"name": "torchray-pointing-v1", "metric": "pointing", "description": "", "params": {"tolerance": 15},
             "columns": columns, "rows": rows, "best": {"all": 86.1, "difficult": 75.5}, "plots": []}
    results = {"protocols": [block], "rankings": _rankings([block]),
               "preset": compare(get_preset("torchray-pointing-voc07"), [block])}
    run = Experiment.objects.create(owner=user,
                                    name="reproduce TorchRay", model=lite0, status=Experiment.Status.DONE, num_images=4952,
                                    units_total=3 * 4952, results=results, preset="torchray-pointing-voc07",
                                    methods=[{"slot": r["slot"], "key": r["method"], "label": r["label"], "enhance": False,
                                              "params": {}, "enhance_params": {}, "baseline": r["baseline"]} for r in rows])
    page.goto(f"{base}/experiments/{run.pk}/")
    table = page.locator("[data-testid=published-vs-ours]")
    table.wait_for()
    assert table.locator("tbody tr").count() == 6
    # within a point: centre 69.9 / 42.4, RISE difficult 75.5, Grad-CAM all 86.1; off: RISE all, Grad-CAM difficult
    assert table.locator("tr[data-verdict=match]").count() == 4
    assert table.locator("tr[data-verdict=differ]").count() == 2
    grad = table.locator("tr", has_text="Grad-CAM").first
    assert "86.60" in grad.inner_text() and "86.10" in grad.inner_text() and "-0.50" in grad.inner_text()
    assert "torchray-pointing-v1" in grad.inner_text() and "TorchRay benchmark table" in grad.inner_text()
    assert "within 1 point" in page.inner_text("[data-testid=preset-rule]")
    shot(page, "preset-published-vs-ours", page.locator("[data-testid=preset-comparison]"))
    assert not errors, errors
