import dataclasses

import pytest

from experiments.core.protocols import (
    InsertionDeletionProtocol,
    PointingProtocol,
    Preprocessing,
    Substrate,
    copy_protocol,
    get_protocol,
    protocol_from_dict,
    protocol_names,
    register_protocol,
)

BUILT_IN = [
    "thesis-v1", "rise-v1", "groupcam-v1", "chefer-perturbation-v1", "torchray-pointing-v1",
    "thesis-pointing-top100-v1", "chefer-segmentation-v1", "adebayo-v1",
]


def test_every_built_in_name_is_registered():
    assert set(BUILT_IN) <= set(protocol_names())
    for name in BUILT_IN:
        assert get_protocol(name).name == name


def test_insertion_deletion_parameters_match_the_spec():
    thesis, rise, group = get_protocol("thesis-v1"), get_protocol("rise-v1"), get_protocol("groupcam-v1")
    assert thesis.preprocessing == Preprocessing("square", 224) and thesis.step == 448
    assert thesis.insertion_substrate == thesis.deletion_substrate == Substrate("blur", 51, 50.0)
    assert rise.preprocessing == Preprocessing("square", 224) and rise.step == 224
    assert rise.insertion_substrate == Substrate("blur", 11, 5.0)
    assert rise.deletion_substrate.kind == "zeros"
    assert group.preprocessing == Preprocessing("shorter", 224, 256) and group.step == 448
    assert group.insertion_substrate == Substrate("blur", 51, 50.0) and group.deletion_substrate.kind == "zeros"
    assert thesis.group_edges[-1] == 0.9999 and len(thesis.group_edges) == 10


def test_other_parameters_match_the_spec():
    pert = get_protocol("chefer-perturbation-v1")
    assert pert.fractions == pytest.approx([i / 10 for i in range(10)]) and pert.fill == 0.0
    assert pert.preprocessing == Preprocessing("square", 224) and set(pert.explain) == {"predicted", "target"}
    assert get_protocol("torchray-pointing-v1").tolerance == 15 and get_protocol("torchray-pointing-v1").score == "max"
    top = get_protocol("thesis-pointing-top100-v1")
    assert (top.score, top.top_k, top.tolerance) == ("top-k", 100, 15)
    seg = get_protocol("chefer-segmentation-v1")
    assert seg.preprocessing == Preprocessing("square", 224) and seg.threshold == "mean"
    sanity = get_protocol("adebayo-v1")
    assert set(sanity.modes) == {"cascading", "independent"} and sanity.hog_cell == 16


def test_protocols_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_protocol("thesis-v1").step = 1


def test_duplicate_names_raise():
    with pytest.raises(ValueError, match="already registered"):
        register_protocol("thesis-v1")(lambda: PointingProtocol(name=""))


def test_copy_gets_the_new_name_and_changes_only_what_is_asked():
    copy = copy_protocol("rise-v1", "rise-steps-112", step=112, insertion_substrate={"kind": "blur", "kernel": 21, "sigma": 7})
    original = get_protocol("rise-v1")
    assert copy.name == "rise-steps-112" and copy.step == 112 and original.step == 224
    assert copy.insertion_substrate == Substrate("blur", 21, 7)
    assert copy.deletion_substrate == original.deletion_substrate
    assert "rise-steps-112" not in protocol_names()  # user copies live in the database


def test_copy_refuses_built_in_names_unknown_and_invalid_parameters():
    with pytest.raises(ValueError, match="built-in"):
        copy_protocol("rise-v1", "thesis-v1")
    with pytest.raises(ValueError, match="no parameter"):
        copy_protocol("rise-v1", "mine", blur=3)
    with pytest.raises(ValueError, match="odd"):
        copy_protocol("rise-v1", "mine", insertion_substrate={"kind": "blur", "kernel": 10, "sigma": 5})
    with pytest.raises(ValueError, match="top_k"):
        copy_protocol("thesis-pointing-top100-v1", "mine", top_k=None)


def test_to_dict_round_trips():
    for name in BUILT_IN:
        protocol = get_protocol(name)
        assert protocol_from_dict(protocol.to_dict()) == protocol
    copy = copy_protocol("groupcam-v1", "g2", group_edges=(0.5, 0.9999))
    rebuilt = protocol_from_dict(copy.to_dict())
    assert isinstance(rebuilt, InsertionDeletionProtocol) and rebuilt == copy


def test_preprocessing_geometries():
    from PIL import Image

    from experiments.core.imageops import preprocess_mask, preprocess_pixels

    image = Image.new("RGB", (300, 200))
    assert preprocess_pixels(image, Preprocessing("square", 224)).shape == (3, 224, 224)
    assert preprocess_pixels(image, Preprocessing("shorter", 224, 256)).shape == (3, 224, 224)
    # torchvision's Resize(224): the longer side is int(224 · 300 / 200) = 336
    assert preprocess_pixels(image, get_protocol("torchray-pointing-v1").preprocessing).shape == (3, 224, 336)
    assert preprocess_pixels(Image.new("RGB", (201, 300)), Preprocessing("keep-aspect", 224)).shape == (3, 334, 224)
    import numpy as np

    mask = np.zeros((200, 300), bool)
    mask[:, :150] = True  # left half
    cropped = preprocess_mask(mask, Preprocessing("shorter", 224, 256))
    # resized to 384×256, centre crop starts at x = 80: the left half ends at x = 192 − 80 = 112
    assert cropped[:, :112].all() and not cropped[:, 112:].any()
    with pytest.raises(ValueError, match="resize_to"):
        Preprocessing("keep-aspect", 224, 256)
