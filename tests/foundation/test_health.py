"""/healthz reports the database, the broker, the workers and the models' weights."""
import pytest
from django.conf import settings


@pytest.mark.django_db
def test_healthy_with_database_broker_and_a_worker(client, celery_worker):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["database"]["engine"] == "postgresql" and body["database"]["reachable"]
    assert body["broker"]["reachable"]
    assert body["workers"]["count"] >= 1
    queues = next(q for name, q in body["workers"]["workers"].items() if name.startswith("testworker@"))
    assert queues == ["default", "gpu"]
    assert body["models"]["efficientnet_lite0"]["weights"] == "present"
    assert set(body["models"]) == {"efficientnet_lite0", "vgg16", "vgg19", "resnet18", "vit_b_16"}


@pytest.mark.django_db
def test_no_worker_listening_is_unavailable(client, settings):
    # Another Redis database of the same server: reachable, but no worker consumes it.
    base, _, _ = settings.CELERY_BROKER_URL.rpartition("/")
    settings.CELERY_BROKER_URL = f"{base}/9"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["broker"]["reachable"] and body["workers"]["count"] == 0


@pytest.mark.django_db
def test_broker_down_is_unavailable(client, settings):
    from saliency_site.launcher import free_port

    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["broker"]["reachable"] is False and "error" in body["broker"]
    assert body["database"]["reachable"] is True
