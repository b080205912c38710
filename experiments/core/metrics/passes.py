"""Model passes of several images pooled into full batches.

A family whose score needs forward passes of perturbed inputs writes its per-image work as a
*pass generator*: it yields a normalised ``B×3×H×W`` batch on the model's device, receives
that batch's ``B×C`` logits (float32, or float64 for a float64 model), may yield again, and finally returns its result::

    def steps(...):
        logits = yield batch          # any B ≥ 1
        ...
        return record

:func:`drive` runs several such generators, one per image, in lockstep: each round it
concatenates the batches they yield, pushes them through the model in even chunks of at most
``batch_size`` (the device's best batch, not the family's own chunking), and hands each
generator its rows of the logits. An image with 11 passes (infidelity) on its own fills a
batch of 11; four of them fill 44. A generator that raises fails its own image only.

Why generators: the families keep their per-image arithmetic in one readable function, and
the pooling, which only the shard runner and the benchmark need, lives here once.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Generator, Sequence

import torch

__all__ = ["PassGenerator", "default_batch_size", "drive", "drive_one"]

#: What a family's per-image pass generator is: it yields batches, is sent logits, returns a result.
PassGenerator = Generator[torch.Tensor, torch.Tensor, Any]

#: Forward-pass batch per device type (``SALIENCY_EVAL_BATCH`` overrides): ``./run bench-protocols``
#: measures the best batch of one no-gradient pass on the machine (8–16 images on a 2-core CPU,
#: where 64 costs more per image); a GPU is kept busy by larger batches.
DEFAULT_BATCH = {"cpu": 16, "cuda": 64}


def default_batch_size(device: torch.device | str | None) -> int:
    """The forward-pass batch for ``device``: ``SALIENCY_EVAL_BATCH`` if set, else :data:`DEFAULT_BATCH`."""
    configured = os.environ.get("SALIENCY_EVAL_BATCH", "").strip()
    if configured:
        value = int(configured)
        if value < 1:
            raise ValueError(f"SALIENCY_EVAL_BATCH must be a positive integer, not {configured!r}")
        return value
    kind = torch.device(device).type if device is not None else "cpu"
    return DEFAULT_BATCH.get(kind, DEFAULT_BATCH["cuda"])


def even_chunks(total: int, batch_size: int) -> list[int]:
    """Sizes of the fewest chunks of at most ``batch_size`` that hold ``total`` inputs, as even as
    possible: 22 inputs in batches of 16 go as 11 + 11, not 16 + 6 (a small last batch costs
    more per image on a CPU)."""
    chunks = -(-total // batch_size)
    return [total // chunks + (1 if i < total % chunks else 0) for i in range(chunks)]


@torch.no_grad()
def _forward(model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    outputs = []
    for chunk in batch.split(even_chunks(batch.shape[0], batch_size)):
        logits = model(chunk)
        if logits.dim() != 2 or logits.shape[0] != chunk.shape[0]:
            raise ValueError(f"the model must return B×C logits, got shape {tuple(logits.shape)}")
        # Half-precision logits are widened; float32 and float64 models keep their precision.
        outputs.append(logits if logits.dtype in (torch.float32, torch.float64) else logits.float())
    return torch.cat(outputs)


def drive(generators: Sequence[PassGenerator], model: Callable[[torch.Tensor], torch.Tensor], *,
          batch_size: int) -> list[Any]:
    """Run the pass generators together; returns each one's result, or the exception it raised.

    ``model``: normalised ``B×3×H×W`` → ``B×C`` logits. Every round's batches (``Σ B_i`` inputs)
    go through ``model`` in even chunks of at most ``batch_size`` (:func:`even_chunks`). A failing model call (the wrong output
    shape, say) fails every image of that round. Only the model calls run without autograd:
    a generator may compute maps (which need gradients) before it yields.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    results: list[Any] = [None] * len(generators)
    waiting: dict[int, torch.Tensor] = {}

    def advance(i: int, logits: torch.Tensor | None) -> None:
        try:
            batch = generators[i].send(logits)
        except StopIteration as stop:
            results[i] = stop.value
        except Exception as error:  # noqa: BLE001 - one image's failure is that image's result
            results[i] = error
        else:
            if batch.dim() != 4 or batch.shape[0] < 1:
                results[i] = ValueError(f"a pass generator yielded shape {tuple(batch.shape)}, not B×C×H×W")
                generators[i].close()
            else:
                waiting[i] = batch

    for i in range(len(generators)):
        advance(i, None)
    while waiting:
        order = list(waiting)
        batches = [waiting.pop(i) for i in order]
        try:
            logits = _forward(model, torch.cat(batches) if len(batches) > 1 else batches[0], batch_size)
        except Exception as error:  # noqa: BLE001 - the round's images fail with the model's error
            for i in order:
                generators[i].close()
                results[i] = error
            continue
        for i, part in zip(order, logits.split([b.shape[0] for b in batches])):
            advance(i, part)
    return results


def drive_one(generator: PassGenerator, model: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int) -> Any:
    """One generator's result (its exception re-raised): the single-image path of :func:`drive`."""
    [result] = drive([generator], model, batch_size=batch_size)
    if isinstance(result, BaseException):
        raise result
    return result
