"""Products of per-block token-mixing matrices ("rollout"), shared by the ViT methods.

A block maps tokens ``x → M x`` (``M`` an ``N×N`` mixing matrix, attention plus the
residual identity); the mixing from the input tokens to the last block's output is the
product with the **last block leftmost**, ``M_B ⋯ M_2 M_1`` (Abnar & Zuidema 2020, eq. for
``Ã``; Chefer et al.'s code ``compute_rollout_attention``). The class-token row of that
product says how much each input patch flows into the class token.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def rollout(matrices: Sequence[Tensor], start: int = 0) -> Tensor:
    """``M_B ⋯ M_{start+1}`` for ``B×N×N`` matrices listed first block first (``start`` 0-based)."""
    if not matrices:
        raise ValueError("rollout needs at least one block")
    if not 0 <= start < len(matrices):
        raise ValueError(f"start block must be in [0, {len(matrices) - 1}] for a {len(matrices)}-block model, not {start}")
    joint = matrices[start]
    for matrix in matrices[start + 1:]:
        joint = torch.bmm(matrix, joint)
    return joint


def plus_identity(matrix: Tensor) -> Tensor:
    """``M + I`` for a batch ``B×N×N``: the residual connection's share of the token mixing."""
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    return matrix + eye


__all__ = ["rollout", "plus_identity"]
