"""Victims for the evaluation: what a simulated attacker fine-tunes on the released data.

Every victim offers the same tiny interface, so the evaluator treats an LVLM adapter and the
project's own non-transformer VQA model alike:

    victim.finetune(images, prompts, epochs=, lr=, batch_size=, recipe=, freeze_vision=, seed=, augment=)
    victim.accuracy(images, prompts) -> exact-match accuracy on (image, question, answer) triples

Specs (`make_victim`): ``zoo:FAMILY[@SEED]`` and ``FAMILY:/checkpoint`` give an `LVLMVictim`;
``cnn`` (or ``cnn:bow``) gives a fresh `BowCNNVictim` (trained from scratch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from mmguard_core.models.base import LVLMAdapter, Prompt
from mmguard_core.victims.bow_cnn import BowCNNVictim

__all__ = ["Victim", "LVLMVictim", "BowCNNVictim", "make_victim", "NON_TRANSFORMER_PREFIXES"]

NON_TRANSFORMER_PREFIXES = ("cnn",)


class Victim(Protocol):
    name: str
    pretrained: bool

    def finetune(self, images: Sequence[torch.Tensor], prompts: Sequence[Prompt], *, epochs: float, lr: float,
                 batch_size: int, recipe: str = "full", freeze_vision: bool = False, seed: int = 0,
                 augment: Callable | None = None) -> None: ...

    def accuracy(self, images: Sequence[torch.Tensor], prompts: Sequence[Prompt]) -> float: ...


class LVLMVictim:
    """An LVLM adapter (zoo or checkpoint) fine-tuned with the project's one loop (`finetune`)."""

    pretrained = True

    def __init__(self, adapter: LVLMAdapter, name: str) -> None:
        self.adapter = adapter
        self.name = name

    def finetune(self, images, prompts, *, epochs, lr, batch_size, recipe="full", freeze_vision=False, seed=0,
                 augment=None) -> None:
        from mmguard_core.models.training import finetune

        finetune(self.adapter, list(images), list(prompts), epochs=epochs, lr=lr, batch_size=batch_size,
                 recipe=recipe, freeze_vision=freeze_vision, seed=seed, augment=augment)

    def accuracy(self, images, prompts) -> float:
        from mmguard_core.models.training import evaluate_exact

        return evaluate_exact(self.adapter, list(images), list(prompts), batch_size=64)


def make_victim(spec: str, zoo_size: str = "small", device: str = "cpu") -> Victim:
    prefix = spec.split(":", 1)[0].strip().lower()
    if prefix in NON_TRANSFORMER_PREFIXES:
        return BowCNNVictim(name=spec, device=device)
    from mmguard_core.evaluate import load_victim

    return LVLMVictim(load_victim(spec, zoo_size, device=device), spec)
