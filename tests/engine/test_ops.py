"""Shared small operations against numpy/torchvision or hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from explain.core.methods.groupcam import denoise, group_sum
from explain.core.ops import blur, norm, percentile, split_sizes, upsample, upsampled_mean_weights


def test_norm_by_hand_and_constant_maps_become_zero():
    x = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    out = norm(x)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))


def test_percentile_matches_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 13, 17, generator=g)
    for q in (0, 12.5, 70, 99.9, 100):
        expected = np.percentile(x.numpy().reshape(4, -1), q, axis=1)
        np.testing.assert_allclose(percentile(x, q).numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(9, 11), (1, 9, 11), (5, 9, 11), (2, 3, 9, 11)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_percentile_of_any_leading_shape_is_the_same_on_any_number_of_threads(shape, threads):
    # the maps are split over torch's threads for the selection
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = np.percentile(x.numpy().reshape(-1, shape[-2] * shape[-1]), 70, axis=1).reshape(shape[:-2])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = percentile(x, 70)
    finally:
        torch.set_num_threads(before)
    assert got.shape == shape[:-2] and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_denoise_keeps_values_strictly_above_the_percentile():
    m = torch.arange(10.0).view(1, 2, 5)       # 70th percentile of 0…9 is 6.3
    out = denoise(m, 70)
    assert out.flatten().tolist() == [0, 0, 0, 0, 0, 0, 0, 7, 8, 9]
    ties = torch.tensor([[[1.0, 1.0], [1.0, 2.0]]])   # percentile 50 → 1.0: the tied values go
    assert denoise(ties, 50).flatten().tolist() == [0, 0, 0, 2]


def test_blur_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g)
    torch.testing.assert_close(blur(x, 51, 50.0), gaussian_blur(x, [51, 51], [50.0, 50.0]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blur(x, 5, 1.5), gaussian_blur(x, [5, 5], [1.5, 1.5]), atol=1e-5, rtol=1e-5)


def test_groups_of_adjacent_channels():
    assert split_sizes(6, 3) == [2, 2, 2]
    assert split_sizes(7, 3) == [3, 2, 2]
    assert split_sizes(2, 32) == [1, 1]
    m = torch.arange(7.0).view(1, 7, 1, 1).expand(1, 7, 2, 2)
    out = group_sum(m, 3)
    assert out[0, :, 0, 0].tolist() == [0 + 1 + 2, 3 + 4, 5 + 6]


def test_mean_of_upsampled_map_is_a_weighted_sum():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 7, 6, generator=g)
    w = upsampled_mean_weights(7, 6, (224, 200))
    direct = F.interpolate(x, size=(224, 200), mode="bilinear", align_corners=False).mean(dim=(2, 3))
    torch.testing.assert_close(torch.einsum("bkhw,hw->bk", x, w), direct, atol=1e-5, rtol=1e-5)


def test_upsample_keeps_leading_dimensions():
    x = torch.rand(2, 3, 4, 4)
    assert upsample(x, 8).shape == (2, 3, 8, 8)
    assert upsample(x[0, 0], (6, 10)).shape == (6, 10)
