"""Hooks that never outlive a ``with`` block, and a model left exactly as it was found.

:class:`HookSession` registers forward hooks and tensor hooks on enter and removes them in
``finally``; it also restores every module's ``training`` flag and every parameter's
``requires_grad`` and ``.grad``. Exceptions propagate unchanged::

    with HookSession(model) as session:
        session.freeze_parameters()                 # no parameter gradients: faster backward
        session.forward_hook(model.layer4, lambda m, i, o: seen.append(o))
        logits = model(x)

:func:`capture_layer` is the common case of the CAM family: it records one layer's output
as a leaf that requires grad, so a backward pass from the logits stops there.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class HookSession(contextlib.AbstractContextManager):
    """Owns hooks and model state for the duration of a ``with`` block.

    On exit (normal or by exception) it removes every hook it registered, then restores the
    ``training`` flag of every module and the ``requires_grad``/``.grad`` of every parameter of
    ``model`` as they were on enter. It never suppresses the exception.
    """

    def __init__(self, model: nn.Module, *, enable_grad: bool = True):
        self.model = model
        self._enable_grad = enable_grad
        self._handles: list = []
        self._training: list[tuple[nn.Module, bool]] = []
        self._params: list[tuple[nn.Parameter, bool, Tensor | None]] = []
        self._grad_mode: contextlib.AbstractContextManager | None = None

    def __enter__(self) -> "HookSession":
        # One walk over the modules for both snapshots (``parameters()`` would walk them again);
        # a parameter shared by two modules is listed once, as ``parameters()`` does.
        modules = list(self.model.modules())
        self._training = [(m, m.training) for m in modules]
        seen: set[int] = set()
        self._params = []
        for module in modules:
            for param in module._parameters.values():
                if param is not None and id(param) not in seen:
                    seen.add(id(param))
                    self._params.append((param, param.requires_grad, param.grad))
        if self._enable_grad:
            self._grad_mode = torch.enable_grad()
            self._grad_mode.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.remove_hooks()
        finally:
            # Writes only where something changed: nn.Module.__setattr__ and the .grad setter
            # cost more than the comparison, and a session runs on every explanation.
            for module, flag in self._training:
                if module.training is not flag:
                    module.training = flag
            for param, requires_grad, grad in self._params:
                if param.requires_grad is not requires_grad:
                    param.requires_grad_(requires_grad)
                if param.grad is not grad:
                    param.grad = grad
            self._training, self._params = [], []
            if self._grad_mode is not None:
                self._grad_mode.__exit__(None, None, None)
                self._grad_mode = None
        return False  # never swallow the exception

    # -- registration ----------------------------------------------------------------------
    def forward_hook(self, module: nn.Module, hook: Callable, **kwargs) -> None:
        self._handles.append(module.register_forward_hook(hook, **kwargs))

    def forward_pre_hook(self, module: nn.Module, hook: Callable, **kwargs) -> None:
        self._handles.append(module.register_forward_pre_hook(hook, **kwargs))

    def tensor_hook(self, tensor: Tensor, hook: Callable[[Tensor], Tensor | None]) -> None:
        self._handles.append(tensor.register_hook(hook))

    def freeze_parameters(self) -> None:
        """Turn off ``requires_grad`` for every parameter (restored on exit)."""
        for param, _, _ in self._params:
            param.requires_grad_(False)

    def remove_hooks(self) -> None:
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()


class _LayerCapture(HookSession):
    def __init__(self, model: nn.Module, layer: nn.Module):
        super().__init__(model)
        self.layer = layer
        self.activation: Tensor | None = None
        self.calls = 0

    def __enter__(self) -> "_LayerCapture":
        super().__enter__()
        self.freeze_parameters()
        self.forward_hook(self.layer, self._hook)
        return self

    def _hook(self, module, inputs, output):
        if not isinstance(output, Tensor):
            raise ValueError(
                f"layer {type(module).__name__} returns {type(output).__name__}, not a tensor; "
                "choose a layer whose output is a feature map (or token) tensor"
            )
        self.calls += 1
        # A fresh leaf: the backward pass stops here and nothing before the layer is recorded.
        leaf = output.detach().requires_grad_(True)
        self.activation = leaf
        # Hand a copy downstream so in-place ops (ReLU(inplace=True)) cannot alter the record.
        return leaf.clone()


def capture_layer(model: nn.Module, layer: nn.Module) -> _LayerCapture:
    """Context manager recording ``layer``'s output as ``.activation``, a leaf requiring grad.

    Parameters are frozen for the block, so the forward pass up to the layer builds no graph
    and ``torch.autograd.grad(score, cap.activation)`` traverses only the layers after it.
    The layer must run once per forward pass (the last call wins otherwise).
    """
    return _LayerCapture(model, layer)


def count_hooks(model: nn.Module) -> int:
    """Forward/backward hooks currently registered on any module of ``model`` (for leak tests)."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
    return total
