"""The settings read every external piece from the environment and fail loudly on bad values."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; from django.conf import settings; django.setup();"
    "db = settings.DATABASES['default'];"
    "print(json.dumps({'engine': db['ENGINE'], 'host': db['HOST'], 'port': db['PORT'], 'name': db['NAME'],"
    " 'broker': settings.CELERY_BROKER_URL, 'debug': settings.DEBUG, 'hosts': settings.ALLOWED_HOSTS}))"
)


def settings_with(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DEBUG")}
    clean.update({"DJANGO_SETTINGS_MODULE": "saliency_site.settings", "SALIENCY_DATA_DIR": str(tmp_path)}, **env)
    return subprocess.run([sys.executable, "-c", PROBE], cwd=BASE_DIR, env=clean, capture_output=True, text=True)


def test_database_and_broker_urls_switch_to_external_servers(tmp_path):
    result = settings_with(tmp_path, DATABASE_URL="postgres://site:pw@db.internal:5433/saliency",
                           CELERY_BROKER_URL="redis://queue.internal:6380/2", DEBUG="yes",
                           ALLOWED_HOSTS="a.example, b.example")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.postgresql"
    assert (values["host"], values["port"], values["name"]) == ("db.internal", 5433, "saliency")
    assert values["broker"] == "redis://queue.internal:6380/2"
    assert values["debug"] is True
    assert values["hosts"] == ["a.example", "b.example"]


def test_embedded_servers_are_found_through_the_launchers_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "services.json").write_text(json.dumps(
        {"database_url": "postgresql://postgres:@/saliency?host=/tmp/pgsock", "broker_url": "redis://127.0.0.1:7777/0"}))
    values = json.loads(settings_with(tmp_path).stdout)
    assert values["name"] == "saliency"
    assert values["broker"] == "redis://127.0.0.1:7777/0"


@pytest.mark.parametrize("env, message", [
    ({"DEBUG": "perhaps"}, "DEBUG='perhaps' is not a boolean"),
    ({"DATABASE_URL": "sqlite:///x.db"}, "DATABASE_URL must point to PostgreSQL"),
    ({"DB_CONN_MAX_AGE": "forever"}, "DB_CONN_MAX_AGE='forever' is not an integer"),
])
def test_bad_values_fail_at_start_with_the_variable_named(tmp_path, env, message):
    result = settings_with(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr
