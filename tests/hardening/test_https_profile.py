"""The HTTPS profile (HTTPS=1) makes `manage.py check --deploy` clean; without it the four warnings show."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def _run(code_or_args: list[str], **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "SECRET_KEY": secrets.token_urlsafe(50), **env}
    environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)   # set for the browser tests, never in deployment
    return subprocess.run([sys.executable, *code_or_args], cwd=BASE_DIR, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_under_the_https_profile():
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], HTTPS="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_without_the_profile_check_deploy_names_what_is_missing():
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], HTTPS="0")
    assert result.returncode != 0
    for code in ("W004", "W008", "W012", "W016"):
        assert code in result.stdout + result.stderr


def _settings(**env: str) -> dict:
    code = ("import json, django; from django.conf import settings as s; django.setup(); print(json.dumps({k: getattr(s, k, None) "
            "for k in ('SECURE_SSL_REDIRECT', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', "
            "'SECURE_PROXY_SSL_HEADER', 'SECURE_REDIRECT_EXEMPT')}))")
    result = _run(["-c", code], DJANGO_SETTINGS_MODULE="saliency_site.settings", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_profile_and_the_proxy_header():
    on = _settings(HTTPS="1", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https")
    assert on["SECURE_SSL_REDIRECT"] and on["SESSION_COOKIE_SECURE"] and on["CSRF_COOKIE_SECURE"]
    assert on["SECURE_HSTS_SECONDS"] >= 31_536_000
    assert on["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert on["SECURE_REDIRECT_EXEMPT"] == ["^healthz$"]    # probes speak plain HTTP
    off = _settings(HTTPS="0")
    assert not off["SECURE_SSL_REDIRECT"] and not off["SESSION_COOKIE_SECURE"] and off["SECURE_HSTS_SECONDS"] == 0
    assert off["SECURE_PROXY_SSL_HEADER"] is None


def test_a_malformed_proxy_header_fails_loudly():
    result = _run(["manage.py", "check"], SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert result.returncode != 0 and "must read 'Header-Name: value'" in result.stderr
