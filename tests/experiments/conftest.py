"""Helpers of the experiments tests (users and models: tests/conftest.py)."""
import pytest

LOCALISATION = {"kind": "sample-localisation", "subset": {"mode": "first", "n": 3}}


@pytest.fixture(scope="session", autouse=True)
def default_localisation_set():
    """The default localisation set (seed 0, 12 images) in the site's sample cache, so runs on it
    start at once; a set not in the cache is built on a worker first (tests/paths test that)."""
    from django.conf import settings

    from experiments.core.datasets import sample_dataset

    sample_dataset("localisation", cache_dir=settings.DATA_DIR / "samples", seed=0, num_images=12)
