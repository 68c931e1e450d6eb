"""The surrogate ensemble and the protection loss taken over it.

l_prot = answer-token LM loss + bph_weight * BPH + crs_weight * CRS, averaged over surrogates.
The targeted noise may take the answer's negated raw logit in place of the LM loss (`target_loss`), and
add a feature-level term on the copies that carry a FeatureAnchor (`target_feature_weight`).
`balanced_backward` gives each surrogate an equal-magnitude gradient per image (`ensemble_gradient`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from mmguard_core.config import TARGET_LOSSES, ProtectionConfig
from mmguard_core.engine.binding import (
    answer_image_routing,
    bridge_path_hijack,
    contrastive_routing_shift,
    omega_delta,
    resolve_layers,
)
from mmguard_core.engine.feature_target import (
    FeatureAnchor,
    capture_layer_input,
    feature_term,
    pooled_image_states,
)
from mmguard_core.models.base import LVLMAdapter, Prompt

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Surrogate:
    name: str  # the spec it came from, e.g. "zoo:llava" or "llava:/models/llava-1.5-7b-hf"
    adapter: LVLMAdapter
    weight: float = 1.0  # its share in the loss averaged over the models (the image classifiers': classifier_weight)
    # the clean image states the targeted noise's feature term aims by (target_feature_weight); None: no term
    anchor: FeatureAnchor | None = None


def default_surrogate_specs() -> list[str]:
    from mmguard_core.models.zoo import DEFAULT_ENSEMBLE

    return [f"zoo:{family}" for family in DEFAULT_ENSEMBLE]


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for, but no CUDA device is available; use --device cpu")
    return name


def load_ensemble(config: ProtectionConfig) -> list[Surrogate]:
    from mmguard_core.models.registry import load_surrogate
    from mmguard_core.models.zoo import load_zoo_model, parse_zoo_spec

    device = resolve_device(config.device)
    specs = config.surrogates or default_surrogate_specs()
    ensemble = []
    for spec in specs:
        prefix, rest = spec.split(":", 1)
        if prefix == "zoo":
            family, seed = parse_zoo_spec(rest)  # zoo:llava@2: a second llava checkpoint in the ensemble
            adapter = load_zoo_model(family, size=config.zoo_size, seed=seed, device=device)
        else:
            adapter = load_surrogate(spec, device=device, dtype=config.dtype)
        adapter.model.eval()
        for param in adapter.model.parameters():
            param.requires_grad_(False)
        ensemble.append(Surrogate(spec, adapter))
    return ensemble


def to_device(images: Sequence[torch.Tensor], adapter: LVLMAdapter) -> list[torch.Tensor]:
    return [img.to(adapter.device, adapter.dtype) for img in images]


def surrogate_losses(
    surrogates: Sequence[Surrogate],
    images: Sequence[torch.Tensor],
    prompts: Sequence[Prompt],
    config: ProtectionConfig,
    clean_images: Sequence[torch.Tensor] | None = None,
    clean_prompts: Sequence[Prompt] | None = None,
    answer_loss: str = "ce",
    own_answers: Sequence[str] | None = None,
) -> Iterator[tuple[Surrogate, torch.Tensor]]:
    """Each surrogate's l_prot on a batch (on the CPU), one forward pass at a time, so a caller can take
    one model's gradient before the next model's graph exists.
    `answer_loss` "logit": minus the answer tokens' raw logit instead of their cross-entropy.
    `own_answers` (the images' true answers; the prompts carry the targets): with `target_feature_weight`,
    each surrogate holding an anchor adds that weight times the feature term (engine/feature_target.py)."""
    if answer_loss not in TARGET_LOSSES:
        raise ValueError(f"answer_loss: {answer_loss!r} is not one of {', '.join(TARGET_LOSSES)}")
    binding = config.uses_binding and clean_images is not None
    for surrogate in surrogates:
        adapter = surrogate.adapter
        layers = resolve_layers(config.binding_layers, adapter.num_lm_layers) if binding else []
        anchor = surrogate.anchor if own_answers is not None and config.target_feature_weight > 0 else None
        with capture_layer_input(adapter, anchor.layer if anchor is not None else None) as store:
            out = adapter.forward(to_device(images, adapter), prompts, attention_layers=layers)
        if answer_loss == "logit":
            if out.answer_logit is None:  # an adapter written before answer_logit existed
                raise ValueError(f'surrogate {surrogate.name}: its adapter reports no answer logit, which '
                                 'target_loss "logit" needs; use target_loss "ce"')
            loss = -out.answer_logit.float().mean()
        else:
            loss = out.loss.float().mean()
        if anchor is not None:
            states = pooled_image_states(store["hidden"], out.positions)
            targets = [prompt.answer for prompt in prompts]
            loss = loss + config.target_feature_weight * feature_term(states, anchor, own_answers, targets).mean()
        if binding:
            with torch.no_grad():
                clean = adapter.forward(to_device(clean_images, adapter), clean_prompts or prompts,
                                        attention_layers=layers)
            clean_routes = answer_image_routing(clean, layers)
            if config.bph_weight > 0:
                omega = omega_delta(clean_routes, out.positions, config.omega_patch_fraction)
                loss = loss + config.bph_weight * bridge_path_hijack(out, layers, omega, config.bph_betas)
            if config.crs_weight > 0:
                routes = answer_image_routing(out, layers)
                loss = loss + config.crs_weight * contrastive_routing_shift(routes, clean_routes)
        yield surrogate, loss.cpu()


def _total_weight(surrogates: Sequence[Surrogate]) -> float:
    return max(1e-12, sum(surrogate.weight for surrogate in surrogates))


def protection_loss(
    surrogates: Sequence[Surrogate],
    images: Sequence[torch.Tensor],
    prompts: Sequence[Prompt],
    config: ProtectionConfig,
    clean_images: Sequence[torch.Tensor] | None = None,
    clean_prompts: Sequence[Prompt] | None = None,
    answer_loss: str = "ce",
    own_answers: Sequence[str] | None = None,
) -> torch.Tensor:
    """Mean over surrogates (weighted by `Surrogate.weight`) of l_prot on a batch; differentiable w.r.t. the
    images (arguments as `surrogate_losses`)."""
    total = torch.zeros(())
    for surrogate, loss in surrogate_losses(surrogates, images, prompts, config, clean_images, clean_prompts,
                                            answer_loss, own_answers):
        total = total + surrogate.weight * loss
    return total / _total_weight(surrogates) if surrogates else total


def balanced_backward(surrogates: Sequence[Surrogate], leaves: Sequence[Sequence[torch.Tensor]], *args,
                      **kwargs) -> torch.Tensor:
    """Set each leaf's `.grad` to the weighted mean over surrogates of that surrogate's gradient scaled to
    unit mean magnitude on the leaf; `leaves` holds one list of noise tensors per image (an image's loss
    term reaches only its own leaves, so scaling per leaf is scaling per image). Returns the weighted mean
    loss, detached. Other arguments as `surrogate_losses`."""
    flat = [leaf for parts in leaves for leaf in parts]
    sums = [torch.zeros_like(leaf) for leaf in flat]
    total = torch.zeros(())
    for surrogate, loss in surrogate_losses(surrogates, *args, **kwargs):
        # the noise-to-image part of the graph is shared by every surrogate's loss, so it is kept
        grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
        for acc, grad in zip(sums, grads, strict=True):
            if grad is not None:
                acc += surrogate.weight * grad / grad.abs().mean().clamp_min(1e-12)
        total = total + surrogate.weight * loss.detach()
    weight = _total_weight(surrogates)
    for leaf, acc in zip(flat, sums, strict=True):
        leaf.grad = acc / weight
    return total / weight if surrogates else total
