"""/healthz reports the database, the broker, the workers and the models' weights: states to
everyone, details to staff only."""
import json
import os

import pytest


@pytest.fixture()
def staff_client(client, django_user_model):
    from tests.support import PASSWORD

    user = django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_healthy_with_database_broker_and_a_worker(staff_client, celery_worker):
    response = staff_client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["database"]["engine"] == "postgresql" and body["database"]["state"] == "ok"
    assert body["database"]["version"].startswith("PostgreSQL")
    assert body["broker"]["state"] == "ok" and body["broker"]["url"].startswith("redis://")
    assert body["workers"]["count"] >= 1
    queues = next(q for name, q in body["workers"]["workers"].items() if name.startswith("testworker@"))
    assert queues == ["batch", "default", "interactive"]
    assert body["models"]["efficientnet_lite0"]["weights"] == "present"
    assert set(body["models"]) == {"efficientnet_lite0", "vgg16", "vgg19", "resnet18", "vit_b_16"}


@pytest.mark.django_db
def test_anonymous_callers_get_the_states_only(client, celery_worker, settings):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body == {"status": "ok", "database": {"state": "ok"}, "broker": {"state": "ok"},
                    "workers": {"state": "ok"}}
    text = response.content.decode()
    assert "redis://" not in text and "PostgreSQL" not in text and "testworker" not in text


@pytest.mark.django_db
def test_a_logged_in_user_who_is_not_staff_gets_the_states_only(client, alice):
    client.force_login(alice)
    body = client.get("/healthz").json()
    assert set(body["database"]) == {"state"} and set(body["broker"]) == {"state"}


@pytest.mark.django_db
def test_no_worker_listening_is_unavailable(staff_client, settings):
    # Another Redis database of the same server: reachable, but no worker consumes it.
    base, _, _ = settings.CELERY_BROKER_URL.rpartition("/")
    settings.CELERY_BROKER_URL = f"{base}/9"
    response = staff_client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["broker"]["state"] == "ok" and body["workers"]["count"] == 0
    assert body["workers"]["state"] == "unavailable"


@pytest.mark.django_db
def test_broker_down_is_unavailable(staff_client, client, settings):
    from saliency_site.launcher import free_port

    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = staff_client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["broker"]["state"] == "unavailable" and "error" in body["broker"]
    assert body["database"]["state"] == "ok"


@pytest.mark.django_db
def test_a_supervised_child_restarting_is_unavailable(staff_client, celery_worker, settings, tmp_path):
    """The launcher's state file: one child restarting makes the site degraded (503)."""
    settings.DATA_DIR = tmp_path
    (tmp_path / "run").mkdir()
    state = {"pid": os.getpid(), "children": {"redis": {"state": "running", "pid": 1, "restarts": 0},
                                              "worker": {"state": "restarting", "pid": 2, "restarts": 1}}}
    (tmp_path / "run" / "supervisor.json").write_text(json.dumps(state))
    response = staff_client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["supervisor"]["state"] == "unavailable" and body["supervisor"]["error"] == "restarting: worker"
    state["children"]["worker"]["state"] = "running"
    (tmp_path / "run" / "supervisor.json").write_text(json.dumps(state))
    assert staff_client.get("/healthz").status_code == 200
    # A file left behind by a launcher that is gone (no such process) is ignored.
    state["pid"] = 2 ** 22 + 1
    state["children"]["worker"]["state"] = "restarting"
    (tmp_path / "run" / "supervisor.json").write_text(json.dumps(state))
    response = staff_client.get("/healthz")
    assert response.status_code == 200 and "supervisor" not in response.json()
