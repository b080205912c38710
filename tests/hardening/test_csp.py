"""Every page works under the Content-Security-Policy: no violation, no script error, the header sent."""
from __future__ import annotations

import pytest

from tests.support import PASSWORD, make_user

pytestmark = pytest.mark.browser

# Recorded in the page before any of its scripts run.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`));
"""


@pytest.fixture()
def plain_static(settings):
    # The live server finds static files through the finders, which know no hashed names.
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


def test_every_page_runs_under_the_policy(live_server, plain_static, builtin_models, page):
    from experiments.models import Experiment
    from sharing.services import share_create

    user = make_user("carol")
    run = Experiment.objects.create(owner=user, name="csp run", status=Experiment.Status.DONE,
                                    model=builtin_models["efficientnet_lite0"], num_images=0)
    share = share_create(owner=user, view="experiment", object_id=run.pk)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if "Content Security Policy" in message.text or "Refused to" in message.text else None)
    page.add_init_script(RECORD_VIOLATIONS)

    def visit(path: str) -> None:
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.status == 200, f"{path}: {response and response.status}"
        policy = response.headers.get("content-security-policy", "")
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        page.wait_for_load_state("networkidle")
        violations = page.evaluate("window.__csp")
        problems.extend(f"{path}: {v}" for v in violations)

    for path in ("/login/", "/register/"):
        visit(path)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "carol")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)
    for path in ("/", "/explain/", "/segment/", "/models/", "/settings/", "/experiments/",
                 f"/experiments/{run.pk}/", "/experiments/compare/", "/shares/", "/account/", "/welcome/",
                 f"/s/{share.token}/", "/api/docs/"):
        visit(path)
    assert problems == []


def test_the_favicon_is_served(live_server, plain_static, page):
    response = page.goto(f"{live_server.url}/favicon.ico")
    assert response is not None and response.status == 200
    assert response.headers.get("content-type", "").startswith("image/svg+xml")
    assert "<svg" in page.content()
