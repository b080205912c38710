"""ImageContext's maps: the clean top-1 is named once, by the explainer's own forward pass where
the explainer offers ``top1_map``, and every map is computed once per (input, class)."""
from __future__ import annotations

import torch

from experiments.core.metrics import ImageContext
from experiments.core.protocols import get_protocol

from .conftest import MEAN, STD, gradient_explainer, synthetic_sample
from .test_contract import small
from .test_passes import CountingModel


class CountingExplainer:
    """The gradient explainer, counting its calls; with ``names_top1`` it also offers ``top1_map``,
    whose one forward pass both ranks the classes and gives the map."""

    def __init__(self, names_top1: bool):
        self.calls: list[list[int]] = []
        self.top1_calls = 0
        if names_top1:
            self.top1_map = self._top1_map

    def __call__(self, module, batch, targets):
        self.calls.append(list(targets))
        return gradient_explainer(module, batch, targets)

    def _top1_map(self, module, x):
        self.top1_calls += 1
        x = x.detach().clone().requires_grad_(True)
        logits = module(x)
        class_id = int(logits.argmax(dim=1)[0])
        (grad,) = torch.autograd.grad(logits[0, class_id], x)
        return grad.abs().sum(dim=1)[0].detach(), class_id


def context(explainer, model):
    sample = synthetic_sample(seed=4, label=2)
    return ImageContext(model=model, mean=MEAN, std=STD, sample=sample, image=sample.load_image(),
                        explainer=explainer, num_classes=5)


def test_the_explainer_names_the_top1_in_its_own_pass_and_the_map_is_the_classs_own():
    prep = small(get_protocol("thesis-v1")).preprocessing
    plain_model, own_model = CountingModel(), CountingModel()
    own_model.load_state_dict(plain_model.state_dict())
    plain, own = CountingExplainer(names_top1=False), CountingExplainer(names_top1=True)
    plain_ctx, own_ctx = context(plain, plain_model), context(own, own_model)

    [(plain_map, plain_class)] = plain_ctx.maps(prep, [None])
    [(own_map, own_class)] = own_ctx.maps(prep, [None])

    # Without top1_map: a clean pass names the class, then the explainer explains it.
    assert plain_model.calls == [1, 1] and plain.calls == [[plain_class]]
    # With it: the explainer's one pass does both, and the context makes no pass of its own.
    assert own_model.calls == [1] and own.top1_calls == 1 and own.calls == []
    assert own_class == plain_class == own_ctx.top1(prep)
    torch.testing.assert_close(own_map, plain_map)

    # Asked again, by None or by the class, nothing runs: the map and the class are cached.
    again = own_ctx.maps(prep, [None, own_class])
    assert [c for _, c in again] == [own_class, own_class]
    assert own_model.calls == [1] and own.top1_calls == 1 and own.calls == []
    other = (own_class + 1) % 5
    [(_, explained)] = own_ctx.maps(prep, [other])
    assert explained == other and own.calls == [[other]]
