"""docker-compose.yml describes the real multi-node deployment (Docker cannot run here, so we read it)."""
from pathlib import Path

import dj_database_url
import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())


def test_services_are_web_worker_redis_postgres():
    assert set(compose()["services"]) == {"web", "worker", "worker-interactive", "beat", "redis", "postgres"}


@pytest.mark.parametrize("name, queues", [("worker", "interactive,batch,default"),
                                          ("worker-interactive", "interactive,default")])
def test_every_worker_reserves_one_nvidia_gpu_and_can_be_scaled(name, queues):
    worker = compose()["services"][name]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # --scale needs no fixed container name and no host port.
    assert "container_name" not in worker and "ports" not in worker
    command = worker["command"]
    assert "celery -A saliency_site worker" in command and f"--queues {queues} " in command


def test_web_and_workers_share_media_weights_and_servers():
    services = compose()["services"]
    web, worker = services["web"], services["worker"]
    for name in ("media", "weights"):
        assert any(v.startswith(f"{name}:") for v in web["volumes"])
        assert [v for v in web["volumes"] if v.startswith(f"{name}:")] == [v for v in worker["volumes"] if v.startswith(f"{name}:")]
    assert set(compose()["volumes"]) >= {"media", "weights", "pgdata", "redisdata"}
    env = worker["environment"]
    web_only = {"HTTPS", "SECURE_PROXY_SSL_HEADER", "CSRF_TRUSTED_ORIGINS"}   # the HTTPS profile is the web's
    assert env == {k: v for k, v in web["environment"].items() if k not in web_only}
    database = dj_database_url.parse(env["DATABASE_URL"].replace("${POSTGRES_PASSWORD:-saliency}", "x"))
    assert database["HOST"] == "postgres" and database["ENGINE"].endswith("postgresql")
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert services["postgres"]["environment"]["POSTGRES_DB"] == database["NAME"]
    assert "--appendonly yes" in services["redis"]["command"]
    for name in ("web", "worker"):
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                "redis": {"condition": "service_healthy"}}


def test_the_image_installs_the_pinned_requirements():
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile
    assert "pip install -r requirements.txt" in dockerfile
    pins = (BASE_DIR / "requirements.txt").read_text()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins


def test_web_service_alone_runs_the_https_profile():
    services = compose()["services"]
    assert services["web"]["environment"]["HTTPS"].startswith("${HTTPS:-1}")
    assert "X-Forwarded-Proto" in services["web"]["environment"]["SECURE_PROXY_SSL_HEADER"]
    assert "HTTPS" not in services["worker"]["environment"]
