"""Model augmentation for transfer: each shared-noise PGD step sees the surrogates with fresh
multiplicative Gaussian noise on their linear weights, W' = W * (1 + sigma * N(0, 1)).

A pattern that lowers the loss of a whole neighbourhood of each surrogate, not of its exact weights,
is the hope for models it never saw (the "ghost network" / model-augmentation idea for transferable
adversarial examples). The weights themselves are never touched: a forward hook on every nn.Linear
adds x @ (W * sigma * N)^T to its output, so nothing is left to restore and bf16 weights do not
drift; one noise draw per module per context, so a module called twice sees the same weights.
Only plain float nn.Linear modules are jittered (not quantised subclasses, whose weights are not
float values); a Linear called with keyword arguments only is left as it is. Memory: the draws live
until the step's backward is done, about one extra copy of the linear weights.
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
        if not inputs:  # called with keyword arguments only: leave it unperturbed
            return output
        key = id(module)
        if key not in draws:
            weight = module.weight.detach()
            local = torch.Generator(device=weight.device).manual_seed(seeds[key])
            noise = torch.randn(weight.shape, generator=local, device=weight.device, dtype=torch.float32)
            draws[key] = weight * (sigma * noise).to(weight.dtype)
        return output + F.linear(inputs[0], draws[key])

    handles = []
    for model in models:
        for module in model.modules():
            if type(module) is nn.Linear and module.weight.is_floating_point():
                seeds[id(module)] = int(torch.randint(0, 2**62, (), generator=gen))
                handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
