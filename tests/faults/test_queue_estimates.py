"""Queued jobs say where they stand: ``queue_position`` and ``estimate_s`` in the job JSON.

The jobs are created through the API inside the test's transaction, so their tasks are never
sent (``on_commit``) and no worker takes them: the queue stays exactly as the test builds it.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from explain import services
from explain.models import Job

pytestmark = pytest.mark.django_db


def _set(owner, model):
    image = services.image_create(owner=owner, sample="chelsea")
    explanation_set = services.explanation_set_create(owner=owner, model=model, image=image)
    explanation_set.jobs.update(status=Job.Status.DONE)  # the prediction is over: only maps wait
    return explanation_set


def _history(explanation_set, method_key: str, walls: list[float], enhance: bool = False) -> None:
    """Finished jobs of ``method_key`` that took ``walls`` seconds on a worker (start to finish)."""
    end = timezone.now() - timedelta(minutes=5)
    for wall in walls:
        Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, method_key=method_key,
                           target=1, enhance=enhance, status=Job.Status.DONE, progress=1.0, seconds=wall / 2,
                           started_at=end - timedelta(seconds=wall), finished_at=end)


def _maps(api, explanation_set, *keys: str, enhance: bool = False) -> list[int]:
    answer = api.post(f"/api/explanation-sets/{explanation_set.pk}/maps/",
                      {"target": 281, "methods": [{"key": k, "enhance": enhance} for k in keys]}, format="json")
    assert answer.status_code == 202, answer.content
    return [int(url.rstrip("/").rsplit("/", 1)[-1]) for url in answer.json()["jobs"]]


def _job(api, pk: int) -> dict:
    answer = api.get(f"/api/jobs/{pk}/")
    assert answer.status_code == 200, answer.content
    return answer.json()


def test_positions_count_every_users_earlier_jobs_and_estimates_add_up(alice, bob, alice_api, bob_api, lite0):
    history = _set(alice, lite0)
    _history(history, "gradcam", [1.0, 2.0, 9.0])       # median 2.0 s
    _history(history, "xgradcam", [3.0, 3.0, 100.0])    # median 3.0 s (an outlier does not move it)
    first, second = _maps(alice_api, _set(alice, lite0), "gradcam", "xgradcam")
    [third] = _maps(bob_api, _set(bob, lite0), "gradcam")

    rows = [_job(alice_api, first), _job(alice_api, second), _job(bob_api, third)]
    assert [r["queue_position"] for r in rows] == [1, 2, 3]
    assert [r["estimate_s"] for r in rows] == [2.0, 5.0, 7.0]

    # The first one starts: what is left of it stays ahead of the others.
    Job.objects.filter(pk=first).update(status=Job.Status.RUNNING, started_at=timezone.now() - timedelta(seconds=0.5))
    rows = [_job(alice_api, first), _job(alice_api, second), _job(bob_api, third)]
    assert [r["queue_position"] for r in rows] == [None, 1, 2]
    # (Each answer reads the clock: on a busy machine more than the 0.5 s may have passed.)
    assert 0.0 <= rows[0]["estimate_s"] <= 1.5
    assert 3.0 <= rows[1]["estimate_s"] <= 4.5 and 5.0 <= rows[2]["estimate_s"] <= 6.5
    # Running longer than its kind takes: nothing is left of it, the others wait only for theirs.
    Job.objects.filter(pk=first).update(started_at=timezone.now() - timedelta(seconds=30))
    rows = [_job(alice_api, first), _job(alice_api, second), _job(bob_api, third)]
    assert [r["estimate_s"] for r in rows] == [0.0, 3.0, 5.0]

    # Finished: no position, no estimate.
    Job.objects.filter(pk=first).update(status=Job.Status.DONE, finished_at=timezone.now())
    done = _job(alice_api, first)
    assert done["queue_position"] is None and done["estimate_s"] is None
    assert _job(alice_api, second)["queue_position"] == 1


def test_the_prior_stands_in_until_a_method_was_measured(alice, alice_api, lite0):
    from experiments.services.estimates import ENHANCE_FACTOR, METHOD_PRIOR_SECONDS

    explanation_set = _set(alice, lite0)
    [plain] = _maps(alice_api, explanation_set, "layercam")
    [enhanced] = _maps(alice_api, explanation_set, "layercam", enhance=True)
    prior = METHOD_PRIOR_SECONDS["layercam"]
    assert _job(alice_api, plain)["estimate_s"] == round(prior, 1)
    assert _job(alice_api, enhanced)["estimate_s"] == round(prior + prior * ENHANCE_FACTOR, 1)
    # A key nothing is known about (a method a newer worker offers, say): no estimate, a position all the same.
    unknown = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, method_key="not-a-method",
                                 target=1)
    row = _job(alice_api, unknown.pk)
    assert row["queue_position"] == 3 and row["estimate_s"] is None


def test_the_queue_is_read_once_per_answer_not_once_per_job(alice, alice_api, lite0):
    _history(_set(alice, lite0), "gradcam", [1.0, 2.0, 3.0])
    explanation_set = _set(alice, lite0)

    def queue_queries(path: str) -> list[str]:
        """The answer's queries that read the queue: the queued jobs, the running ones, the costs."""
        with CaptureQueriesContext(connection) as captured:
            assert alice_api.get(path).status_code == 200
        sql = [q["sql"] for q in captured.captured_queries]
        return [kind for kind, marker in (("queued", "= 'queued'"), ("running", "= 'running'"),
                                          ("costs", "ROW_NUMBER"))
                for q in sql if marker in q]

    _maps(alice_api, explanation_set, "gradcam", "xgradcam")
    assert queue_queries("/api/jobs/") == ["queued", "running", "costs"]
    assert queue_queries("/api/explanation-sets/") == ["queued", "running", "costs"]
    _maps(alice_api, explanation_set, "gradcam", "xgradcam", "layercam", "gradcampp")
    _maps(alice_api, _set(alice, lite0), "gradcam", "layercam")
    rows = alice_api.get("/api/jobs/").json()
    rows = rows.get("results", rows) if isinstance(rows, dict) else rows
    # 2 + 2 + 2 jobs: the repeated Grad-CAM and XGrad-CAM requests on the first set reuse their jobs.
    assert sorted(r["queue_position"] for r in rows if r["queue_position"]) == list(range(1, 7))
    assert queue_queries("/api/jobs/") == ["queued", "running", "costs"]
    assert queue_queries("/api/explanation-sets/") == ["queued", "running", "costs"]
    # Nothing waits: nothing is read.
    Job.objects.update(status=Job.Status.DONE)
    assert queue_queries("/api/jobs/") == []
