"""The jobs list as a long poll: held while nothing changes, answered as soon as a job is saved.

Against the real Redis of the test run: a job saved in this process (as a worker saves it)
publishes on its channel, and the held request in another thread reads the rows again.
"""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from explain import job_events
from explain.models import ExplanationSet, InputImage, Job

pytestmark = pytest.mark.django_db(transaction=True)

#: Longer than any test should take to see a change, so an answer before it was woken, not timed out.
HOLD_S = 8.0


def _jobs(owner, model, n: int = 2) -> list[Job]:
    image = InputImage.objects.create(owner=owner, name="x.png", file="x.png", display_file="x.jpg", width=4,
                                      height=4, display_width=4, display_height=4, sha256="0" * 64)
    explanation_set = ExplanationSet.objects.create(owner=owner, model=model, image=image)
    return [Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, method_key="gradcam", target=1)
            for _ in range(n)]


def _url(jobs, **query) -> str:
    tail = "".join(f"&{key}={value}" for key, value in query.items())
    return f"/api/jobs/?ids={','.join(str(j.pk) for j in jobs)}{tail}"


def _held(api, url: str) -> dict:
    """Ask ``url`` in another thread; the caller acts meanwhile, then reads ``result`` after ``join``."""
    outcome: dict = {}

    def ask() -> None:
        started = time.monotonic()
        try:
            response = api.get(url)
            outcome.update(status=response.status_code, body=response.json(), seconds=time.monotonic() - started)
        finally:
            connection.close()   # this thread's own database connection

    outcome["thread"] = thread = threading.Thread(target=ask)
    thread.start()
    return outcome


def test_the_list_carries_a_version_that_changes_with_what_a_page_shows(alice_api, alice, lite0):
    jobs = _jobs(alice, lite0)
    first = alice_api.get(_url(jobs)).json()
    assert alice_api.get(_url(jobs)).json()["version"] == first["version"]
    jobs[1].mark_running("w")
    running = alice_api.get(_url(jobs)).json()
    assert running["version"] != first["version"]
    jobs[1].mark_progress(0.5)
    assert alice_api.get(_url(jobs)).json()["version"] != running["version"]
    assert "waited" not in first   # a plain list is never held


def test_a_held_request_is_answered_when_a_job_changes(alice_api, alice, lite0):
    jobs = _jobs(alice, lite0)
    seen = alice_api.get(_url(jobs)).json()["version"]
    asked = _held(alice_api, _url(jobs, wait=HOLD_S, seen=seen))
    time.sleep(0.5)
    assert asked["thread"].is_alive(), "nothing changed: the request should still be held"
    jobs[0].mark_running("w")       # what a worker does as it starts the job
    asked["thread"].join(HOLD_S + 5)
    assert asked["status"] == 200
    assert asked["body"]["waited"] is True and asked["body"]["version"] != seen
    assert {j["id"]: j["status"] for j in asked["body"]["results"]}[jobs[0].pk] == "running"
    assert asked["seconds"] < HOLD_S / 2, asked["seconds"]


def test_a_held_request_ends_at_its_wait_with_the_same_version(alice_api, alice, lite0):
    jobs = _jobs(alice, lite0)
    seen = alice_api.get(_url(jobs)).json()["version"]
    started = time.monotonic()
    body = alice_api.get(_url(jobs, wait=0.6, seen=seen)).json()
    assert time.monotonic() - started >= 0.6
    assert body["waited"] is True and body["version"] == seen


def test_a_changed_or_finished_list_is_answered_at_once(alice_api, alice, lite0):
    jobs = _jobs(alice, lite0)
    started = time.monotonic()
    stale = alice_api.get(_url(jobs, wait=HOLD_S, seen="0" * 16)).json()
    assert stale["waited"] is True and stale["version"] != "0" * 16
    for job in jobs:
        job.mark_failed("broken")
    seen = alice_api.get(_url(jobs)).json()["version"]
    finished = alice_api.get(_url(jobs, wait=HOLD_S, seen=seen)).json()   # nothing left to change
    assert finished["version"] == seen
    assert time.monotonic() - started < HOLD_S / 2


def test_a_job_started_ahead_wakes_the_jobs_queued_behind_it(alice_api, bob, bob_api, alice, lite0):
    [mine] = _jobs(alice, lite0, n=1)
    [ahead] = _jobs(bob, lite0, n=1)
    Job.objects.filter(pk=ahead.pk).update(created_at=mine.created_at.replace(year=2000))
    before = alice_api.get(_url([mine])).json()
    assert before["results"][0]["queue_position"] == 2
    asked = _held(alice_api, _url([mine], wait=HOLD_S, seen=before["version"]))
    time.sleep(0.3)
    ahead.refresh_from_db()
    ahead.mark_running("w")         # bob's job leaves the queue: alice's moves up
    asked["thread"].join(HOLD_S + 5)
    assert asked["body"]["results"][0]["queue_position"] == 1
    assert asked["seconds"] < HOLD_S / 2, asked["seconds"]


def test_no_free_slot_or_no_redis_answers_at_once_and_says_so(alice_api, alice, lite0, monkeypatch):
    jobs = _jobs(alice, lite0)
    seen = alice_api.get(_url(jobs)).json()["version"]
    monkeypatch.setattr(job_events, "_slots", threading.BoundedSemaphore(1))
    job_events._slots.acquire()          # every slot of this process taken
    started = time.monotonic()
    assert alice_api.get(_url(jobs, wait=HOLD_S, seen=seen)).json()["waited"] is False
    job_events._slots.release()
    monkeypatch.setattr(job_events, "_client", job_events.connect("redis://127.0.0.1:1/0"))   # nothing listens
    assert alice_api.get(_url(jobs, wait=HOLD_S, seen=seen)).json()["waited"] is False
    assert time.monotonic() - started < HOLD_S / 2
    saving = time.monotonic()
    jobs[0].mark_progress(0.3)           # a save with Redis away still succeeds, without waiting for it
    assert Job.objects.get(pk=jobs[0].pk).progress == pytest.approx(0.3)
    assert time.monotonic() - saving < HOLD_S / 2


@pytest.mark.parametrize("query, field", [("wait=3", "wait"), ("wait=11&seen=ab", "wait"), ("wait=-1&seen=ab", "wait"),
                                          ("wait=x&seen=ab", "wait")])
def test_a_bad_wait_is_refused(alice_api, alice, lite0, query, field):
    jobs = _jobs(alice, lite0, n=1)
    response = alice_api.get(f"{_url(jobs)}&{query}")
    assert response.status_code == 400 and field in response.json(), response.content


def test_others_jobs_are_not_listed_nor_waited_on(alice_api, bob_api, alice, lite0):
    jobs = _jobs(alice, lite0, n=1)
    body = bob_api.get(_url(jobs, wait=0.2, seen="x")).json()
    assert body["results"] == []


def test_a_map_on_a_warm_model_wakes_its_pages_twice_running_then_done(alice, lite0, monkeypatch):
    """Each save is a wake of every page following the job (an answer, then their next request):
    a map whose model is loaded goes from queued to running to done, with no progress saves between."""
    from explain import services

    image = services.image_create(owner=alice, sample="chelsea")
    explanation_set = services.explanation_set_create(owner=alice, model=lite0, image=image)
    statuses = []

    def run_once() -> None:
        job = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, method_key="gradcam", target=281)
        statuses.clear()
        services.job_run(job=Job.objects.select_related("explanation_set__model", "explanation_set__image").get(pk=job.pk))
        assert Job.objects.get(pk=job.pk).status == Job.Status.DONE

    real_announce = job_events.announce

    def announce(pks, **kwargs) -> None:
        pks = list(pks)
        statuses.extend(Job.objects.filter(pk__in=pks).values_list("status", flat=True))
        real_announce(pks, **kwargs)

    monkeypatch.setattr(job_events, "announce", announce)
    run_once()                  # loads the model (a progress save, if the load is slow)
    run_once()
    assert statuses == [Job.Status.RUNNING, Job.Status.DONE]
