"""Feature-level targeting for the targeted per-sample noise (`target_feature_weight`).

The answer loss pushes each surrogate copy's *output* towards the target answer; a victim the
ensemble never held reads the image through its own layers, and output-level targeted examples
reach such models less than ones that move the image's *intermediate representation* into the
target class (Inkawhich et al. 2019, "Feature Space Perturbations Yield More Transferable
Adversarial Examples"; Huang et al. 2019, "Enhancing Adversarial Example Transferability with an
Intermediate Level Attack"). Here the representation is each LVLM copy's hidden state at the image
token positions entering its middle language-model layer, averaged over those positions: where the
image's content has been read into the language model's space, before any answer token can reach it
(the image block precedes the question and the answer in every family's template, and attention is
causal; PaliGemma's prefix attention lets the question in too, never the answer).

    feature term = cos(h - mu, c_own - mu) - cos(h - mu, c_target - mu)

with c_a the mean clean state of the shard's samples whose answer is a, and mu the mean over the
shard (so the cosine compares what differs between images, not the large state every image shares).
Adapters without decoder layers (the image classifiers) keep the answer loss only. Means are keyed
by answer text, as the answer loss's targets are: with repeated answers (a closed set) c_target is the
target group's mean; with captions, where every answer is its own, it is the state of the one shard
member whose caption the answer loss aims at (protect.target_answers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmguard_core.models.base import LVLMAdapter, Prompt, TokenPositions


@dataclass
class FeatureAnchor:
    """One surrogate copy's clean image states on a shard: the layer they were read at, the mean per
    answer text, and the mean over the shard."""

    layer: int
    centroids: dict[str, torch.Tensor]  # answer text -> (D,)
    mean: torch.Tensor  # (D,)


def supports_states(adapter: object) -> bool:
    """Whether `adapter` has language-model decoder layers to read image states from."""
    return callable(getattr(adapter, "decoder_layers", None)) and getattr(adapter, "num_lm_layers", 0) > 0


def state_layer(adapter: LVLMAdapter) -> int:
    """The middle decoder layer (its input is read): layer 1 of a 2-layer language model."""
    return adapter.num_lm_layers // 2


@contextmanager
def capture_layer_input(adapter: LVLMAdapter, layer: int | None) -> Iterator[dict[str, torch.Tensor]]:
    """A forward pre-hook on decoder layer `layer`; yields a dict whose "hidden" is its input (B, T, D).
    `layer` None: no hook, the dict stays empty (a caller that reads states only sometimes)."""
    store: dict[str, torch.Tensor] = {}
    if layer is None:
        yield store
        return

    def hook(_module, args, kwargs):
        store["hidden"] = args[0] if args else kwargs["hidden_states"]

    handle = adapter.decoder_layers()[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield store
    finally:
        handle.remove()


def pooled_image_states(hidden: torch.Tensor, positions: Sequence[TokenPositions]) -> torch.Tensor:
    """(B, D) float32: each row's hidden states averaged over its image token positions."""
    rows = [hidden[b, pos.image.to(hidden.device)].float().mean(0) for b, pos in enumerate(positions)]
    return torch.stack(rows)


def build_anchor(adapter: LVLMAdapter, images: Sequence[torch.Tensor], prompts: Sequence[Prompt],
                 batch_size: int) -> FeatureAnchor:
    """The clean image states of a shard through `adapter` (no gradient), grouped by the prompts' answers."""
    layer = state_layer(adapter)
    states = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            with capture_layer_input(adapter, layer) as store:
                out = adapter.forward([img.to(adapter.device, adapter.dtype) for img in images[chunk]],
                                      prompts[chunk])
            states.append(pooled_image_states(store["hidden"], out.positions).cpu())
    every = torch.cat(states)
    by_answer: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_answer.setdefault(prompt.answer, []).append(i)
    centroids = {answer: every[rows].mean(0) for answer, rows in by_answer.items()}
    return FeatureAnchor(layer, centroids, every.mean(0))


def feature_term(states: torch.Tensor, anchor: FeatureAnchor, own_answers: Sequence[str],
                 target_answers: Sequence[str]) -> torch.Tensor:
    """(B,) cos to the own answer's centroid minus cos to the target's, after centring on the shard mean;
    0 for a row whose own or target answer has no centroid (a target named by a group key the shard
    does not hold)."""
    mean = anchor.mean.to(states.device)
    centred = states - mean
    terms = []
    for row, own, target in zip(centred, own_answers, target_answers, strict=True):
        if own not in anchor.centroids or target not in anchor.centroids or own == target:
            terms.append(row.sum() * 0.0)
            continue
        c_own = anchor.centroids[own].to(states.device) - mean
        c_target = anchor.centroids[target].to(states.device) - mean
        terms.append(F.cosine_similarity(row, c_own, dim=0) - F.cosine_similarity(row, c_target, dim=0))
    return torch.stack(terms)
