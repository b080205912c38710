"""The numerical core of the explainers as a library: PyTorch only, no Django, no side effects
at import (see ``docs/library.md``).

::

    import torchvision
    from explain.core import explain, wrap_model, methods_for

    clf = wrap_model(torchvision.models.resnet18(num_classes=10), name="my resnet")
    methods_for(clf)                          # the methods this model supports
    [e] = explain(clf, clf.normalize(pixels), "gradcam")   # pixels: 1×3×224×224 in [0, 1]
    e.saliency                                # 224×224, finite, non-negative

- :func:`explain`: one method on a batch, a list of :class:`Explanation` (map, logits, target,
  provenance manifest); :func:`explain_many`: several methods, a pass they share computed once;
- :func:`wrap_model`: any ``torch.nn.Module`` classifier with its preprocessing and class
  names, default layers found automatically; :func:`load_classifier`: a built-in model whose
  weights are on this machine (:func:`random_classifier`: the same with seeded random weights);
- :func:`method_keys`, :func:`methods_for`, :func:`get_method`: the registered methods;
- :func:`load_image` / :func:`preprocess`: an image file to the model's normalised input.
"""
from __future__ import annotations

from .engine import Explanation, explain, explain_many, library_versions
from .handle import Classifier
from .imaging import load_image, preprocess
from .methods.base import Method, Param
from .registry import get_method, method_keys, method_support, methods_for, register_method
from .wrap import find_default_layers, model_family, wrap_model
from .zoo import WeightsInvalid, WeightsMissing, load_classifier, random_classifier

__all__ = [
    "Classifier", "Explanation", "Method", "Param", "WeightsInvalid", "WeightsMissing",
    "explain", "explain_many", "find_default_layers", "get_method", "library_versions", "load_classifier", "load_image",
    "method_keys", "method_support", "methods_for", "model_family", "preprocess", "random_classifier", "register_method",
    "wrap_model",
]
