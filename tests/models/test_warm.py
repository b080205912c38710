"""A worker's pool process loads the first built-in models with weights as it starts
(settings.WARM_MODELS), so the first map does not pay the load."""
import pytest

from explain import services
from explain.core import zoo

pytestmark = pytest.mark.django_db


def test_warming_loads_the_first_models_with_weights_into_the_process_cache(builtin_models, monkeypatch):
    assert services.classifiers_warm(limit=0) == {}
    monkeypatch.setattr(zoo, "_cache", {})
    warmed = services.classifiers_warm(limit=5)
    # Built-ins without weights on this machine (all but EfficientNet-Lite0 on a fresh install) are skipped.
    present = sorted(row.builtin_key for row in builtin_models.values() if row.weights_present)
    assert "efficientnet_lite0" in present and sorted(warmed) == present
    assert warmed["efficientnet_lite0"] > 0
    assert sorted(key[0] for key in zoo._cache) == present
    # A later load is the cached classifier, not a second copy.
    assert services.classifier_load(model=builtin_models["efficientnet_lite0"]) is next(iter(zoo._cache.values()))


def test_a_model_that_fails_to_load_is_skipped_with_a_warning(builtin_models, monkeypatch, caplog):
    def broken(**kwargs):
        raise zoo.WeightsInvalid("the weights file is damaged")

    monkeypatch.setattr(services.classifiers, "classifier_load", broken)
    assert services.classifiers_warm(limit=1) == {}
    assert "could not warm efficientnet_lite0: the weights file is damaged" in caplog.text
