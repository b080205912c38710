"""A queued run shows its place among the queued runs of the batch queue (everyone's), on the API,
the run list and the run page, and moves up as the runs before it leave the queue."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from .conftest import LOCALISATION

pytestmark = pytest.mark.django_db


def _submit(api, lite0, name, **changes):
    body = {"name": name, "model": lite0.pk, "dataset": LOCALISATION, "methods": ["baseline_centre"],
            "protocols": ["torchray-pointing-v1"], **changes}
    response = api.post("/api/experiments/", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def test_queued_runs_know_their_place(alice_api, bob_api, alice, lite0, client):
    first = _submit(alice_api, lite0, "first")
    second = _submit(bob_api, lite0, "bob's")
    third = _submit(alice_api, lite0, "third")
    later = _submit(alice_api, lite0, "tonight", start_at=(timezone.now() + timedelta(hours=8)).isoformat())
    assert later["status"] == "scheduled" and later["progress"]["queue_place"] is None

    def place(api, run):
        return api.get(run["url"]).json()["progress"]["queue_place"]

    assert [place(alice_api, first), place(bob_api, second), place(alice_api, third)] == [[1, 3], [2, 3], [3, 3]]
    client.force_login(alice)
    listing = client.get("/experiments/").content.decode()
    assert "place 1 of 3 in the queue" in listing and "place 3 of 3 in the queue" in listing
    assert "place 2 of 3" not in listing          # bob's run is not on alice's list

    assert alice_api.post(f"{first['url']}cancel/").status_code == 200
    assert place(alice_api, first) is None
    assert [place(bob_api, second), place(alice_api, third)] == [[1, 2], [2, 2]]
