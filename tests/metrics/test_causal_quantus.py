"""Insertion and deletion against Quantus 0.6.0's PixelFlipping, with matched settings.

torchcam is not installed here and Quantus has no insertion metric, so both curves are
compared with ``PixelFlipping``: deletion directly (baseline 0 in the model's input space =
our "zeros" substrate, softmax of the explained class), insertion as pixel flipping that
starts from our blurred substrate and writes the original pixels back (its ``perturb_func``).
Settings matched: the same order (a gradient map without ties), the same step. Quantus
ranks the map broadcast over the three channels; with distinct pixel values the three copies
of a pixel are adjacent in that order, so ``features_in_step = 3 n`` removes exactly ``n``
whole pixels per step, as ours does. (Quantus checks that its step divides ``H·W`` although
it steps over ``C·H·W`` values, hence 12×12 images, where 48 divides 144.)

Agreement (tiny CNN with its last layer scaled ×30, three random Gaussian 12×12 colour images, n = 16 px, 9 steps): every point of
both curves within 1e-6. Where the two differ by construction:
* Quantus's curve starts after the first step; ours includes the unperturbed end, ``y_0``;
* its AUC is the trapezoid with ``dx = 1`` over its points (its own call fails under NumPy 2), ours the trapezoid on ``[0, 1]``
  over all ``S + 1`` points, so ``S · ours = Quantus + (y_0 + y_1) / 2`` (checked).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from experiments.core.imageops import gaussian_blur
from experiments.core.metrics.causal import auc, causal_curves
from experiments.core.protocols import copy_protocol

from .conftest import gradient_explainer, tiny_cnn

STEP = 16


def _pixel_flipping(quantus, model, start, y, a, perturb=None):
    kwargs = {"perturb_func": perturb} if perturb else {"perturb_baseline": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.PixelFlipping(features_in_step=3 * STEP, abs=False, normalise=False, disable_warnings=True,
                                       **kwargs)
        curves = np.asarray(metric(model=model, x_batch=start, y_batch=y, a_batch=a, device="cpu", softmax=True))
    # its AUC rule (``return_auc_per_sample``) is np.trapz with dx = 1, which NumPy 2 renamed to
    # np.trapezoid, so Quantus 0.6.0 fails here; the same rule is applied to its curves
    return curves, np.trapezoid(curves, dx=1, axis=1)


def test_insertion_and_deletion_match_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn()
    with torch.no_grad():
        model[-1].weight *= 30                   # confident logits, so the probabilities move
    torch.manual_seed(8)
    x = torch.randn(3, 3, 12, 12) * 2            # contrast enough for the curves to move
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())
    assert all(len(torch.unique(m)) == m.numel() for m in a)         # no ties: one order for both
    protocol = copy_protocol("rise-v1", "rise-quantus", step=STEP,
                             insertion_substrate={"kind": "blur", "kernel": 11, "sigma": 5.0})
    unit = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for i in range(len(x)):
        insertion, deletion, _ = causal_curves(model, x[i], a[i], int(y[i]), protocol=protocol, **unit)
        steps = len(deletion) - 1
        assert steps == 9
        assert np.ptp(deletion) > 0.05 and np.ptp(insertion) > 0.05

        q_del, q_del_auc = _pixel_flipping(quantus, model, x[i:i + 1].numpy(), y[i:i + 1].numpy(), a[i:i + 1, None].numpy())
        np.testing.assert_allclose(deletion[1:], q_del[0], atol=1e-6)
        assert steps * auc(deletion) == pytest.approx(q_del_auc[0] + (deletion[0] + deletion[1]) / 2, abs=1e-6)

        original = x[i:i + 1].reshape(1, -1).numpy()

        def write_back(arr, indices, **kwargs):
            out = arr.copy()
            rows = np.arange(len(arr))[:, None]
            out[rows, indices] = original[rows, indices]
            return out

        blurred = gaussian_blur(x[i], 11, 5.0)[None].numpy()
        q_ins, q_ins_auc = _pixel_flipping(quantus, model, blurred, y[i:i + 1].numpy(), a[i:i + 1, None].numpy(),
                                           perturb=write_back)
        np.testing.assert_allclose(insertion[1:], q_ins[0], atol=1e-6)
        assert steps * auc(insertion) == pytest.approx(q_ins_auc[0] + (insertion[0] + insertion[1]) / 2, abs=1e-6)
