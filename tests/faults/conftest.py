"""Helpers of the fault tests: waiting through outages, and the records of an uninterrupted run."""
from __future__ import annotations

import time

import pytest
from django.db import InterfaceError, OperationalError, connection

COARSE = {"copy_of": "thesis-v1", "name": "thesis-coarse4", "params": {"step": 224 * 224 // 4}}
DATASET = {"kind": "sample-localisation", "subset": {"mode": "first", "n": 4}}


def wait_for(condition, timeout: float, what: str, poll: float = 0.2):
    """Poll ``condition`` until truthy; a database that is restarting counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (OperationalError, InterfaceError):
            connection.close()  # reconnect at the next query
            value = None
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def records_of(run) -> list:
    from experiments.models import Record

    return sorted(((r.image_index, r.method_slot, r.protocol, r.class_id, r.variant, r.ok), r.data)
                  for r in Record.objects.filter(experiment=run))


def units_written(run) -> int:
    from experiments.models import Record

    return Record.objects.filter(experiment=run).values("image_index", "method_slot").distinct().count()


def assert_same_records(run, reference) -> None:
    """Same keys, each once, and the same values (to float32 rounding: the worker runs one torch
    thread, this process may run another number, and oneDNN then sums in another order)."""
    got, want = records_of(run), records_of(reference)
    assert [k for k, _ in got] == [k for k, _ in want], set(k for k, _ in got) ^ set(k for k, _ in want)
    assert len({k for k, _ in got}) == len(got)
    for (key, a), (_, b) in zip(got, want):
        assert a.keys() == b.keys(), key
        for name in a:
            assert a[name] == pytest.approx(b[name], rel=1e-5, abs=1e-5), (key, name)


@pytest.fixture()
def submit(alice, lite0):
    return dict(owner=alice, model=lite0, dataset=DATASET, methods=["gradcam", "baseline_random"],
                protocols=[COARSE, "torchray-pointing-v1"], shard_size=1)


@pytest.fixture()
def reference(submit):
    """The uninterrupted run, computed in this process (lazily: after the faulty one)."""
    from experiments import services

    def compute():
        return services.experiment_run_sync(
            experiment=services.experiment_create(name="reference", submit=False, **submit))

    return compute
