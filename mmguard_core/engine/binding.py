"""Cross-modal binding disruption on the LM's self-attention (MMGuard's attention losses).

Bridge Path Hijack (BPH) raises the attention mass that one token set puts on another:
  trigger -> Omega_delta, answer -> trigger, answer -> Omega_delta,
each term -log(mean over queries, heads and layers of the summed attention mass on the keys).
Contrastive Routing Shift (CRS) pushes the answer tokens' attention over image tokens on the
protected input away from their (stop-gradient) attention on the clean input. KL is unbounded,
so the loss is exp(-KL): in (0, 1], zero gradient once the two routings are far apart.

Omega_delta is not every image token: following the paper's mechanism figure (the answer ends up
attending to a few background patches), it is the `fraction` of image tokens that the answer
attends to LEAST on the clean input - the patches carrying no evidence, which the noise then
turns into the answer's evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmguard_core.models.base import AdapterOutput

EPS = 1e-8


def resolve_layers(spec: str, num_layers: int) -> list[int]:
    if spec == "all":
        return list(range(num_layers))
    if spec == "last":
        return [num_layers - 1]
    if spec == "middle":
        low, high = num_layers // 3, max(num_layers // 3 + 1, (2 * num_layers + 2) // 3)
        return list(range(low, min(high, num_layers)))
    return [layer for layer in (int(x) for x in spec.split(",")) if layer < num_layers]


def _stack(out: AdapterOutput, layers: Sequence[int]) -> torch.Tensor:
    """(B, L, heads, T, T) attention of the requested layers."""
    return torch.stack([out.attentions[layer] for layer in layers], dim=1)


def answer_image_routing(out: AdapterOutput, layers: Sequence[int]) -> list[torch.Tensor]:
    """Per row: the answer queries' attention over image tokens, averaged over layers, heads
    and queries, renormalised to a distribution over image tokens."""
    attn = _stack(out, layers)
    routes = []
    for row, pos in enumerate(out.positions):
        if len(pos.answer) == 0 or len(pos.image) == 0:
            routes.append(torch.empty(0))
            continue
        block = attn[row][:, :, pos.answer][:, :, :, pos.image]  # (L, H, n_ans, n_img)
        mass = block.mean(dim=(0, 1, 2))
        routes.append(mass / (mass.sum() + EPS))
    return routes


def omega_delta(clean_routes: Sequence[torch.Tensor], positions, fraction: float) -> list[torch.Tensor]:
    """Image-token positions least attended by the answer on the clean input."""
    chosen = []
    for route, pos in zip(clean_routes, positions, strict=True):
        if route.numel() == 0:
            chosen.append(pos.image)
            continue
        k = max(1, round(fraction * route.numel()))
        order = torch.argsort(route.detach())[:k]
        chosen.append(pos.image[order.to(pos.image.device)])
    return chosen


def _hijack_term(attn_row: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor | None:
    if len(queries) == 0 or len(keys) == 0:
        return None
    mass = attn_row[:, :, queries][:, :, :, keys].sum(-1)  # (L, H, n_q)
    return -torch.log(mass.mean() + EPS)


def bridge_path_hijack(out: AdapterOutput, layers: Sequence[int], omega: Sequence[torch.Tensor],
                       betas: Sequence[float]) -> torch.Tensor:
    attn = _stack(out, layers)
    terms = []
    for row, pos in enumerate(out.positions):
        pairs = ((pos.trigger, omega[row]), (pos.answer, pos.trigger), (pos.answer, omega[row]))
        for beta, (queries, keys) in zip(betas, pairs, strict=True):
            term = _hijack_term(attn[row], queries, keys) if beta > 0 else None
            if term is not None:
                terms.append(beta * term)
    return torch.stack(terms).mean() if terms else attn.sum() * 0


def contrastive_routing_shift(protected_routes: Sequence[torch.Tensor],
                              clean_routes: Sequence[torch.Tensor]) -> torch.Tensor:
    losses = []
    for prot, clean in zip(protected_routes, clean_routes, strict=True):
        if prot.numel() == 0 or prot.numel() != clean.numel():
            continue
        target = clean.detach() + EPS
        kl = (target * (target.log() - (prot + EPS).log())).sum()
        losses.append(torch.exp(-kl))
    return torch.stack(losses).mean() if losses else torch.zeros(())
