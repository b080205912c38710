"""CNN methods explain H×W inputs (keep-aspect protocols such as the pointing game need them).

A ViT's position embedding fixes its grid, so it keeps square inputs and says so.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from explain.core.engine import explain
from explain.core.enhance import crop_windows, window_positions
from explain.core.methods.cameras import product_by_column_grams, product_by_column_windows, resized_channel_product
from explain.core.methods.msgcam import multiscale_captures
from explain.core.methods.rise import rise_grids, rise_masks
from explain.core.ops import scaled_sizes
from explain.core.registry import get_method_class, method_keys

from .conftest import tiny_cnn_classifier
from .test_contract import FAST, assert_same_map

CNN_KEYS = [k for k in method_keys() if "cnn" in get_method_class(k).families]
H, W = 24, 40


@pytest.fixture(scope="module")
def wide():
    return torch.randn(3, 3, H, W, generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("key", CNN_KEYS)
def test_a_wide_batch_gives_maps_of_its_size_equal_to_one_by_one(key, wide):
    clf = tiny_cnn_classifier()
    batch = explain(clf, wide, key, params=FAST.get(key), seed=2)
    for i, e in enumerate(batch):
        assert e.saliency.shape == (H, W)
        assert torch.isfinite(e.saliency).all() and (e.saliency >= 0).all()
        assert e.manifest["input_shape"] == [1, 3, H, W]
        single = explain(clf, wide[i:i + 1], key, params=FAST.get(key), seed=2)[0]
        assert single.target == e.target
        assert_same_map(key, e.saliency, single.saliency)
    # not just zeros: the map carries the method's evidence
    assert any(float(e.saliency.max()) > 0 for e in batch)


@pytest.mark.parametrize("key", ["gradcam", "rise", "msgcam"])
def test_a_wide_input_can_be_enhanced(key, wide):
    clf = tiny_cnn_classifier()
    enhance = {"window": 16, "stride": 8, "radius": 6}
    [e] = explain(clf, wide[:1], key, params=FAST.get(key), enhance=enhance)
    assert e.saliency.shape == (H, W)
    assert float(e.saliency.max()) == pytest.approx(1.0)


def test_windows_of_a_wide_input_are_zoomed_to_squares():
    x = torch.arange(H * W, dtype=torch.float32).view(1, 1, H, W).expand(1, 3, H, W).contiguous()
    positions = window_positions(H, W, 16, 8)
    assert positions == [(0, 0), (0, 8), (0, 16), (0, 24), (8, 0), (8, 8), (8, 16), (8, 24)]
    windows = crop_windows(x, positions, 16)
    assert windows.shape == (8, 3, 24, 24)                     # the shorter side: no stretching
    y0, x0 = positions[5]
    expected = F.interpolate(x[:, :, y0:y0 + 16, x0:x0 + 16], size=(24, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(windows[5:6], expected)


def test_a_vit_refuses_non_square_inputs_with_the_size_to_use(vit):
    with pytest.raises(ValueError, match=r"square inputs only.*resize to 32×32"):
        explain(vit, torch.randn(1, 3, 32, 48), "gradcam")


def test_scaled_sizes_grow_the_shorter_side_and_keep_the_aspect_ratio():
    assert scaled_sizes((224, 224), 4, 100) == [(224, 224), (324, 324), (424, 424), (524, 524)]
    assert scaled_sizes((24, 40), 3, 6) == [(24, 40), (30, 50), (36, 60)]
    assert scaled_sizes((300, 200), 2, 100) == [(300, 200), (450, 300)]


def test_multiscale_captures_see_the_scaled_wide_inputs(wide):
    clf = tiny_cnn_classifier()
    seen = []
    handle = clf.module.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        acts, grads, _ = multiscale_captures(clf, wide[:1], torch.tensor([1]), "relu2",
                                             scaled_sizes((H, W), 3, 6), "bilinear", 8)
    finally:
        handle.remove()
    assert seen == [(24, 40), (30, 50), (36, 60)]
    # relu2 sits after a 2×2 pooling
    assert [tuple(a.shape[-2:]) for a in acts] == [(12, 20), (15, 25), (18, 30)]


def test_rise_masks_of_a_wide_input_by_hand():
    g = torch.Generator().manual_seed(0)
    grids, shifts = rise_grids(6, 2, 0.5, (4, 6), g)
    assert shifts[:, 0].max() < 2 and shifts[:, 1].max() < 3     # cells ⌈4/2⌉ = 2 and ⌈6/2⌉ = 3
    masks = rise_masks(grids, shifts, (4, 6))
    assert masks.shape == (6, 4, 6)
    for i in range(6):
        big = F.interpolate(grids[i:i + 1], size=(6, 9), mode="bilinear", align_corners=False)[0, 0]
        y, x = shifts[i].tolist()
        torch.testing.assert_close(masks[i], big[y:y + 4, x:x + 6])


def test_rise_keeps_the_square_random_stream():
    # a square input draws its shifts exactly as before non-square inputs existed
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    grids, shifts = rise_grids(10, 7, 0.5, 224, g1)
    expected_grids = (torch.rand(10, 1, 7, 7, generator=g2) < 0.5).float()
    assert torch.equal(grids, expected_grids)
    assert torch.equal(shifts, torch.randint(0, 32, (10, 2), generator=g2))


@pytest.mark.parametrize("product", [resized_channel_product, product_by_column_windows, product_by_column_grams])
@pytest.mark.parametrize("shapes, chunk", [
    ([(3, 5), (4, 7), (6, 9)], 2),
    ([(3, 5), (24, 40), (31, 57)], 5),      # as large as the plane, and larger (columns nobody reads)
])
def test_cameras_product_equals_resizing_each_channel_on_a_wide_plane(product, shapes, chunk):
    # resized_channel_product runs the column windows on the CPU, the Gram matrices elsewhere
    g = torch.Generator().manual_seed(3)
    acts = [torch.randn(2, 5, h, w, generator=g) for h, w in shapes]
    grads = [torch.randn(2, 5, h, w, generator=g) for h, w in shapes]
    share = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    plane = (H, W)

    def up(x):
        return F.interpolate(x, size=plane, mode="bilinear", align_corners=False)

    a_bar = sum(share[:, t, None, None, None] * up(a) for t, a in enumerate(acts))
    g_bar = sum(share[:, t, None, None, None] * up(gr) for t, gr in enumerate(grads))
    expected = (a_bar * g_bar).sum(dim=1)
    got = product(acts, grads, share, plane, channel_chunk=chunk)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
