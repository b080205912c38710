"""The generated localisation set: bounded options and a bounded, least-recently-used cache. No database."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from experiments.core.datasets import (
    MAX_LOCALISATION_IMAGES,
    MAX_SEED,
    sample_cache_prune,
    sample_check_options,
    sample_dataset,
    sample_is_cached,
)


@pytest.mark.parametrize("seed, num_images", [
    (-1, 1), (MAX_SEED + 1, 1), (True, 1), (1.0, 1), ("1", 1), ([1], 1),
    (0, 0), (0, MAX_LOCALISATION_IMAGES + 1), (0, 1000), (0, 2.5), (0, "3"), (0, False),
])
def test_options_out_of_range_or_not_integers_are_refused(tmp_path, seed, num_images):
    with pytest.raises(ValueError, match="whole number"):
        sample_dataset("localisation", cache_dir=tmp_path, seed=seed, num_images=num_images)
    assert not any(tmp_path.iterdir())  # nothing was built


def test_the_bounds_themselves_are_accepted():
    assert sample_check_options(seed=MAX_SEED, num_images=MAX_LOCALISATION_IMAGES) == (MAX_SEED, MAX_LOCALISATION_IMAGES)
    assert sample_check_options(seed=np.int64(0), num_images=1) == (0, 1)


def _sets(cache):
    return sorted(p.name for p in cache.iterdir() if "-localisation-" in p.name)


def test_cache_keeps_the_most_recently_used_sets(tmp_path):
    opened = {}
    for seed in (1, 2, 3):
        opened[seed] = sample_dataset("localisation", cache_dir=tmp_path, seed=seed, num_images=1, cache_sets=2)
        time.sleep(0.02)  # distinct modification times
    assert _sets(tmp_path) == ["sample-v1-localisation-seed2-n1", "sample-v1-localisation-seed3-n1"]
    assert not sample_is_cached("localisation", cache_dir=tmp_path, seed=1, num_images=1)
    # Using seed 2 again makes seed 3 the least recently used.
    sample_dataset("localisation", cache_dir=tmp_path, seed=2, num_images=1, cache_sets=2)
    time.sleep(0.02)
    sample_dataset("localisation", cache_dir=tmp_path, seed=4, num_images=1, cache_sets=2)
    assert _sets(tmp_path) == ["sample-v1-localisation-seed2-n1", "sample-v1-localisation-seed4-n1"]
    # An evicted set's samples still load: the set is rebuilt, identically.
    before = np.asarray(sample_dataset("localisation", cache_dir=tmp_path / "fresh", seed=1, num_images=1)[0].load_image())
    again = opened[1][0]
    assert np.array_equal(np.asarray(again.load_image()), before)
    assert again.foreground_mask().any()


def test_cache_size_limit_and_stale_build_folders(tmp_path):
    one = sample_dataset("localisation", cache_dir=tmp_path, seed=1, num_images=2)
    size = sum(f.stat().st_size for f in (tmp_path / os.path.basename(one.root)).rglob("*") if f.is_file())
    time.sleep(0.02)
    sample_dataset("localisation", cache_dir=tmp_path, seed=2, num_images=2, cache_bytes=size + size // 2)
    assert _sets(tmp_path) == ["sample-v1-localisation-seed2-n2"]   # two would exceed the byte limit
    stale = tmp_path / ".sample-crashed"
    stale.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = tmp_path / ".sample-building"
    fresh.mkdir()
    sample_cache_prune(tmp_path)
    assert not stale.exists() and fresh.exists()
