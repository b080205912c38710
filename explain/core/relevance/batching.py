"""Bounded memory for the relevance methods: the batch goes through in chunks of ``batch_size``.

Relevance propagation keeps every block's (or layer's) activations of the whole chunk, e.g.
for ViT-B/16 about 230 MB per image (measured peak for Transformer Attribution and LRP), so
the enhancement's 25 windows or a large experiment batch are split. Images never interact,
so the maps do not depend on the chunk size.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def in_chunks(inputs: Tensor, targets: Tensor, size: int, maps: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``maps(inputs[i:i+size], targets[i:i+size])`` for consecutive chunks, concatenated on dim 0."""
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, not {size}")
    if inputs.shape[0] <= size:
        return maps(inputs, targets)
    return torch.cat([maps(inputs[i:i + size], targets[i:i + size]) for i in range(0, inputs.shape[0], size)])


__all__ = ["in_chunks"]
