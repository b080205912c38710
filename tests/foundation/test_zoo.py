"""The model zoo: real pretrained weights where they ship, a clear error where they do not."""
import pickle

import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command
from PIL import Image
from skimage import data as samples

from explain.core import zoo
from explain.core.imaging import preprocess

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    """No imported weights and empty library caches: like a fresh machine without internet."""
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def top5(classifier, photo):
    inputs, _ = preprocess(Image.fromarray(photo), classifier)
    with torch.no_grad():
        probabilities = classifier.module(inputs[None].to(classifier.device)).softmax(-1)[0]
    return probabilities.topk(5).indices.tolist()


def test_efficientnet_lite0_classifies_the_sample_photos():
    classifier = zoo.load_classifier("efficientnet_lite0")
    assert classifier.weights_checksum == zoo.BUILTIN_MODELS["efficientnet_lite0"].known_sha256
    cat_top5 = top5(classifier, samples.chelsea())
    assert cat_top5[0] in CAT_CLASSES, [classifier.class_names[i] for i in cat_top5]
    assert ESPRESSO in top5(classifier, samples.coffee())
    assert classifier.class_names[ESPRESSO] == "espresso"


def test_models_are_loaded_once_per_process():
    assert zoo.load_classifier("efficientnet_lite0") is zoo.load_classifier("efficientnet_lite0")


def test_parameters_are_frozen_and_in_eval_mode():
    classifier = zoo.load_classifier("efficientnet_lite0")
    assert not classifier.module.training
    assert not any(p.requires_grad for p in classifier.module.parameters())


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "vit_b_16"])
def test_cpu_models_keep_their_convolution_weights_channels_last(name):
    """The layout of the images on the CPU; the logits are those of the model as built."""
    classifier = zoo.random_classifier(name, num_classes=10, seed=1)
    weights = [p for p in classifier.module.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert all(not p.requires_grad for p in classifier.module.parameters()) and not classifier.module.training
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    reference = zoo.get_spec(name).build(10)          # contiguous weights, copied in
    reference.load_state_dict(classifier.module.state_dict())
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in reference.parameters() if p.dim() == 4)
    with torch.no_grad():
        assert torch.allclose(classifier.module(x), reference.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["vgg16", "vgg19", "resnet18", "vit_b_16"])
def test_missing_weights_are_a_clear_error_never_random_weights(empty_caches, name):
    with pytest.raises(zoo.WeightsMissing, match=rf"not on this machine.*import_weights {name} FILE"):
        zoo.load_classifier(name)
    assert zoo.weights_status()[name]["weights"] == "missing"


def test_default_layers_exist_in_every_architecture():
    for name, spec in zoo.BUILTIN_MODELS.items():
        module = spec.build(10)
        names = {n for n, _ in module.named_modules()}
        for role, layer in spec.default_layers.items():
            assert layer in names, f"{name}: default {role} layer {layer} is not a module"


@pytest.mark.django_db
def test_import_weights_installs_a_fitting_file(empty_caches):
    weights = empty_caches / "resnet18.pth"
    torch.save(zoo.random_classifier("resnet18", seed=3).module.state_dict(), weights)
    call_command("import_weights", "resnet18", str(weights))
    classifier = zoo.load_classifier("resnet18", device="cpu")
    reference = zoo.random_classifier("resnet18", seed=3).module.state_dict()
    assert torch.equal(classifier.module.state_dict()["fc.weight"], reference["fc.weight"])
    assert zoo.weights_status()["resnet18"]["weights"] == "present"
    from explain.models import ClassifierModel

    assert ClassifierModel.objects.get(builtin_key="resnet18").weights_present


@pytest.mark.django_db
def test_import_weights_rejects_another_architectures_file(empty_caches):
    weights = empty_caches / "resnet18.pth"
    torch.save(zoo.random_classifier("resnet18").module.state_dict(), weights)
    with pytest.raises(CommandError, match="do not fit the architecture: keys .* missing"):
        call_command("import_weights", "vgg16", str(weights))
    assert zoo.weights_status()["vgg16"]["weights"] == "missing"


@pytest.mark.django_db
def test_import_weights_rejects_wrong_shapes(empty_caches):
    state = zoo.random_classifier("resnet18").module.state_dict()
    state["fc.weight"] = torch.zeros(10, 512)
    weights = empty_caches / "resnet18-10.pth"
    torch.save(state, weights)
    with pytest.raises(CommandError, match=r"wrong shape \(fc.weight: file \(10, 512\) vs model \(1000, 512\)"):
        call_command("import_weights", "resnet18", str(weights))


class _RunsCode:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.django_db
def test_import_weights_never_runs_a_pickle(empty_caches):
    marker = empty_caches / "pwned"
    payload = _RunsCode()
    payload.marker = str(marker)
    weights = empty_caches / "evil.pth"
    weights.write_bytes(pickle.dumps({"fc.weight": payload}))
    with pytest.raises(CommandError, match="loads safely"):
        call_command("import_weights", "resnet18", str(weights))
    assert not marker.exists()


@pytest.mark.django_db
def test_import_weights_rejects_a_file_that_is_not_weights(empty_caches):
    junk = empty_caches / "notes.safetensors"
    junk.write_text("these are not weights")
    with pytest.raises(CommandError, match="not a readable .safetensors file"):
        call_command("import_weights", "resnet18", str(junk))
    photo = empty_caches / "photo.pth"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo, format="PNG")
    with pytest.raises(CommandError, match="not a PyTorch state_dict that loads safely"):
        call_command("import_weights", "resnet18", str(photo))


def test_sync_registers_every_builtin(db):
    from explain.models import ClassifierModel

    call_command("sync_models")
    rows = {row.builtin_key: row for row in ClassifierModel.objects.filter(owner=None)}
    assert set(rows) == set(zoo.BUILTIN_MODELS)
    assert rows["efficientnet_lite0"].weights_present
    assert rows["vit_b_16"].family == "vit" and rows["vgg19"].family == "cnn"
    assert len(rows["vgg16"].class_names) == 1000
