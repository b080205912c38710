"""Helpers of the web tests: small images and weights files (users and models: tests/conftest.py)."""
from __future__ import annotations

import io

import torch



def png_bytes(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def state_dict_bytes(architecture: str, num_classes: int, seed: int = 0, fmt: str = "pth") -> bytes:
    """A random-weights state_dict of ``architecture`` as .pth (torch.save) or .safetensors bytes."""
    from explain.core.custom import build_module

    torch.manual_seed(seed)
    state = build_module(architecture, num_classes).state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in state.items()})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
