"""The experiments API: submit (202 with an estimate), progress, results, drill-down, exports,
comparison, sharing, scheduling, and the 4xx answers. Shards run in this process here; the
worker tests run them on a real worker."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from experiments import services
from experiments.models import Experiment, Record

from .conftest import LOCALISATION

pytestmark = pytest.mark.django_db

FAST_CAUSAL = {"copy_of": "thesis-v1", "name": "thesis-coarse", "params": {"step": 224 * 224 // 8}}


def _submit(api, lite0, **changes):
    body = {"name": "api run", "model": lite0.pk, "dataset": LOCALISATION,
            "methods": [{"key": "gradcam"}, {"key": "baseline_centre"}],
            "protocols": ["torchray-pointing-v1", FAST_CAUSAL], "shard_size": 2, **changes}
    return api.post("/api/experiments/", body, format="json")


def test_submit_run_read_results_export_and_compare(alice_api, lite0):
    response = _submit(alice_api, lite0)
    assert response.status_code == 202, response.content
    created = response.json()
    assert created["status"] == "queued" and created["estimated_seconds"] > 0
    assert created["progress"]["units_total"] == 6 and created["progress"]["units_done"] == 0
    assert response["Location"] == created["url"]
    run = Experiment.objects.get(pk=created["id"])
    assert run.shards.count() == 2
    services.experiment_run_sync(experiment=run)

    detail = alice_api.get(created["url"]).json()
    assert detail["status"] == "done"
    assert detail["progress"]["fraction"] == 1.0
    pointing, causal = detail["results"]["protocols"]
    assert pointing["name"] == "torchray-pointing-v1" and pointing["params"]["tolerance"] == 15
    assert causal["params"]["step"] == 224 * 224 // 8
    # The best value per column is the max (higher is better) or min (lower is better) of the rows.
    for block in (pointing, causal):
        for col in block["columns"]:
            values = [r["values"][col["key"]] for r in block["rows"] if r["values"][col["key"]] is not None]
            assert block["best"][col["key"]] == (max(values) if col["better"] == "higher" else min(values))
    curve = causal["rows"][0]["extras"]["insertion_curve"]
    assert len(curve) == 224 * 224 // (224 * 224 // 8) + 1

    records = alice_api.get(f"{created['url']}records/?image=1").json()
    assert records["count"] == Record.objects.filter(experiment=run, image_index=1).count() > 0
    first = records["results"][0]
    assert first["thumb_size"] == 64 and len(first["thumb"]) > 100
    image = alice_api.get(f"{created['url']}images/1/?protocol=torchray-pointing-v1")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert alice_api.get(f"{created['url']}images/99/").status_code == 400

    text = alice_api.get(f"{created['url']}export/txt/")
    body = text.content.decode()
    assert "attachment" in text["Content-Disposition"]
    for expected in ("torchray-pointing-v1", "thesis-coarse", lite0.weights_sha256, "Grad-CAM", "estimated", "first 3"):
        assert expected in body
    table = list(csv.DictReader(io.StringIO(alice_api.get(f"{created['url']}export/csv/").content.decode())))
    assert {r["protocol"] for r in table} == {"torchray-pointing-v1", "thesis-coarse"}
    all_row = next(r for r in table if r["method"] == "Grad-CAM" and r["metric"] == "all")
    assert float(all_row["value"]) == pytest.approx(pointing["rows"][0]["values"]["all"])
    per_record = list(csv.DictReader(io.StringIO(alice_api.get(f"{created['url']}export/csv/?records=1").content.decode())))
    assert len(per_record) == Record.objects.filter(experiment=run).count()
    dump = json.loads(alice_api.get(f"{created['url']}export/json/").content)
    assert dump["provenance"]["model"]["weights_sha256"] == lite0.weights_sha256
    assert dump["provenance"]["dataset"]["keys"] == run.dataset_info["keys"]
    assert len(dump["records"]) == len(per_record)
    assert dump["provenance"]["versions"]["torch"]

    # Compare with a second run that shares the pointing protocol.
    other = _submit(alice_api, lite0, name="second", methods=["baseline_random"], protocols=["torchray-pointing-v1"]).json()
    services.experiment_run_sync(experiment=Experiment.objects.get(pk=other["id"]))
    compared = alice_api.get(f"/api/experiments/compare/?ids={created['id']},{other['id']}").json()
    block = next(b for b in compared["protocols"] if b["name"] == "torchray-pointing-v1")
    assert [r["run"] for r in block["rows"]] == [created["id"], created["id"], other["id"]]
    assert alice_api.get(f"/api/experiments/compare/?ids={created['id']},999999").status_code == 404

    assert alice_api.post(f"{created['url']}cancel/").status_code == 409
    assert "only queued or running runs resume" in alice_api.post(f"{created['url']}resume/").content.decode()
    assert alice_api.delete(f"/api/experiments/{other['id']}/").status_code == 204
    assert not Experiment.objects.filter(pk=other["id"]).exists() and not Record.objects.filter(experiment_id=other["id"]).exists()


def test_share_link_shows_the_run_to_anyone_until_revoked(alice_api, lite0):
    created = _submit(alice_api, lite0, protocols=["torchray-pointing-v1"]).json()
    services.experiment_run_sync(experiment=Experiment.objects.get(pk=created["id"]))
    share = alice_api.post("/api/shares/", {"view": "experiment", "object_id": created["id"]}, format="json")
    assert share.status_code == 201, share.content
    token = share.json()["token"]
    anonymous = APIClient()
    page = anonymous.get(f"/s/{token}/")
    assert page.status_code == 200 and b"api run" in page.content and b"torchray-pointing-v1" in page.content
    backup = anonymous.get(f"/s/{token}/files/export.txt")
    assert backup.status_code == 200 and b"torchray-pointing-v1" in b"".join(backup.streaming_content)
    assert alice_api.delete(share.json()["url"]).status_code == 204
    assert anonymous.get(f"/s/{token}/").status_code == 404


def _body(response) -> bytes:
    assert response.status_code == 200
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_a_shared_run_names_its_data_set_but_never_a_server_path(alice_api, lite0, settings):
    created = _submit(alice_api, lite0, protocols=["torchray-pointing-v1"]).json()
    experiment = Experiment.objects.get(pk=created["id"])
    services.experiment_run_sync(experiment=experiment)
    experiment.refresh_from_db()
    root = str(experiment.dataset_info.get("root") or "")
    assert root.startswith("/")   # the owner's own view and exports do carry the folder
    assert root.encode() in _body(alice_api.get(f"{created['url']}export/txt/"))
    token = alice_api.post("/api/shares/", {"view": "experiment", "object_id": created["id"]},
                           format="json").json()["token"]
    anonymous = APIClient()
    shown = [_body(anonymous.get(f"/s/{token}/"))]
    for name in ("export.txt", "export.json", "export.csv"):
        shown.append(_body(anonymous.get(f"/s/{token}/files/{name}")))
    name = experiment.dataset_info["name"].encode()
    assert name in shown[0] and name in shown[1]
    for body in shown:
        for secret in (root, str(settings.DATA_DIR), str(settings.BASE_DIR)):
            assert secret.encode() not in body


def test_others_cannot_see_or_share_a_run(alice_api, bob_api, lite0):
    created = _submit(alice_api, lite0).json()
    assert bob_api.delete(created["url"]).status_code == 404
    assert bob_api.post(f"{created['url']}cancel/").status_code == 404
    assert bob_api.get(created["url"]).status_code == 404
    assert bob_api.get(f"{created['url']}export/json/").status_code == 404
    assert bob_api.post("/api/shares/", {"view": "experiment", "object_id": created["id"]}, format="json").status_code == 404
    assert bob_api.get("/api/experiments/").json()["count"] == 0


@pytest.mark.parametrize("changes, status, message", [
    ({"methods": [{"key": "no_such_method"}]}, 400, "unknown method"),
    ({"methods": [{"key": "transformer_attribution"}]}, 400, "ViT"),
    ({"protocols": ["chefer-perturbation-v1"], "dataset": {"kind": "imagenet-segmentation", "paths": {"path": "/etc/passwd"}}}, 403, "data roots"),
    ({"dataset": {"kind": "sample-localisation", "subset": {"mode": "first", "n": 500}}}, 400, "cannot take 500"),
    ({"protocols": [{"copy_of": "thesis-v1", "name": "bad", "params": {"step": 0}}]}, 400, "step"),
    ({"model": 987654}, 400, "no such model"),
])
def test_bad_requests_answer_4xx_with_the_reason(alice_api, lite0, changes, status, message):
    response = _submit(alice_api, lite0, **changes)
    assert response.status_code == status, response.content
    assert message in response.content.decode()
    assert not Experiment.objects.exists()


def test_missing_weights_answer_409(alice_api, lite0):
    lite0.weights_present = False
    lite0.save(update_fields=["weights_present"])
    assert _submit(alice_api, lite0).status_code == 409


def test_queue_overnight_at_a_time_and_after_the_current_runs(alice, alice_api, lite0):
    later = timezone.now() + timedelta(hours=8)
    scheduled = _submit(alice_api, lite0, name="at night", start_at=later.isoformat()).json()
    assert scheduled["status"] == "scheduled" and scheduled["scheduled_for"]
    running = _submit(alice_api, lite0, name="now").json()
    waiting = _submit(alice_api, lite0, name="next", after_current=True).json()
    assert (running["status"], waiting["status"]) == ("queued", "scheduled")
    # The current run ends (cancelled here): the waiting one starts; the timed one keeps waiting.
    assert alice_api.post(f"{running['url']}cancel/").json()["status"] == "cancelled"
    assert Experiment.objects.get(pk=waiting["id"]).status == "queued"
    assert Experiment.objects.get(pk=scheduled["id"]).status == "scheduled"
    # At its time the scheduled run is released (what the task with that eta does).
    Experiment.objects.filter(pk=scheduled["id"]).update(scheduled_for=timezone.now() - timedelta(seconds=1))
    from experiments.tasks import start_scheduled

    start_scheduled(scheduled["id"])
    start_scheduled(scheduled["id"])          # a redelivery changes nothing
    run = Experiment.objects.get(pk=scheduled["id"])
    assert run.status == "queued" and run.shards.count() == 2


@pytest.mark.parametrize("changes, field", [
    ({"dataset": {"kind": "sample-localisation", "options": "seed=3"}}, "options"),
    ({"dataset": {"kind": "sample-localisation", "options": {"seed": [1]}}}, "seed"),
    ({"dataset": {"kind": "voc2007", "paths": ["voc/VOC2007"]}}, "paths"),
    ({"dataset": {"kind": "voc2007", "paths": {"root": "voc"}, "options": {"image_set": "../../etc/x"}}}, "image_set"),
    ({"dataset": {"kind": "sample-localisation", "subset": {"mode": "first", "n": "many"}}}, "n"),
    ({"dataset": "sample-localisation"}, "dataset"),
    ({"methods": [3, 4]}, "methods"),
    ({"methods": [{"key": "gradcam", "params": [1]}]}, "params"),
    ({"protocols": [7]}, "protocols"),
    ({"protocols": [{"copy_of": ["thesis-v1"]}]}, "copy_of"),
])
def test_wrongly_typed_requests_are_refused_by_the_serializer(alice_api, lite0, changes, field):
    response = _submit(alice_api, lite0, **changes)
    assert response.status_code == 400, response.content
    assert field in response.content.decode()
    assert not Experiment.objects.exists()


def test_options_requests_on_every_run_route_answer_not_500(alice_api, lite0):
    created = _submit(alice_api, lite0).json()
    url = created["url"]
    for route in ("", "cancel/", "resume/", "records/", "images/0/", "export/csv/", "export/json/"):
        response = alice_api.options(f"{url}{route}")
        assert response.status_code == 200, (route, response.content)
        assert "name" in response.json()
    # the new-run options still answer at their old address
    assert "methods" in alice_api.get("/api/experiments/options/").json()
