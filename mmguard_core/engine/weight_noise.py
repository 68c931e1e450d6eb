"""Model augmentation for transfer: each shared-noise PGD step sees the surrogates with fresh
multiplicative Gaussian noise on their linear weights, W' = W * (1 + sigma * N(0, 1)).

A pattern that lowers the loss of a whole neighbourhood of each surrogate, not of its exact weights,
is the hope for models it never saw (the "ghost network" / model-augmentation idea for transferable
adversarial examples). The weights themselves are never touched: a forward hook on every nn.Linear
adds x @ (W * sigma * N)^T to its output, so nothing is left to restore and bf16 weights do not
drift; one noise draw per module per context, so a module called twice sees the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def weight_noise(models: Sequence[nn.Module], sigma: float, gen: torch.Generator) -> Iterator[None]:
    if sigma <= 0:
        yield
        return
    seeds: dict[int, int] = {}
    draws: dict[int, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        key = id(module)
        if key not in draws:
            local = torch.Generator().manual_seed(seeds[key])
            noise = torch.randn(module.weight.shape, generator=local).to(module.weight.device, module.weight.dtype)
            draws[key] = module.weight.detach() * (sigma * noise)
        return output + F.linear(inputs[0], draws[key])

    handles = []
    for model in models:
        for module in model.modules():
            if isinstance(module, nn.Linear):
                seeds[id(module)] = int(torch.randint(0, 2**62, (), generator=gen))
                handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
