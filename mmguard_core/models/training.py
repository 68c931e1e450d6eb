"""The one fine-tuning loop of the project.

Used by the tiny model zoo (pretraining), the engine's simulated attacker (the inner steps of the
bi-level optimisation) and the evaluation victims, so that "fine-tuning" means the same thing
everywhere: AdamW on the mean per-sample answer loss of an `LVLMAdapter`, batches drawn from
seeded permutations, full fine-tuning or LoRA on the language model's projection layers.

Deterministic for a seed on CPU: the shuffling uses its own `torch.Generator`, and the global
torch RNG (dropout, LoRA initialisation) is forked and seeded for the duration of the call, so the
caller's RNG state is left untouched. Thread count is the caller's business (this module never
changes it); the project runs CPU work at 1 thread unless told otherwise.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

from mmguard_core.models.base import LVLMAdapter, Prompt

__all__ = [
    "RECIPES",
    "LM_PROJECTION_RE",
    "VISION_PARAM_RE",
    "finetune",
    "evaluate_exact",
    "predict_exact",
    "lora_target_modules",
    "vision_parameter_names",
]

RECIPES = ("full", "lora")
# a LoRA fine-tune's learning rate against a full fine-tune's: the adapters start at zero and need a
# larger rate, but 10x proved past the stable range on the benchmark (LLaVA learned the clean task to
# 0.31-0.51 in 3 epochs, 0.66 at 3x; docs/evaluation.md, twenty-eighth session). The evaluation's LoRA
# attacker (benchmarks/eval_matrix.py) and the engine's LoRA clean-task copies both train at it.
LORA_LR_FACTOR = 3.0

# LoRA goes on the language model's attention and MLP projections (never on the vision tower,
# whose attention layers carry the same short names).
LM_PROJECTION_RE = (
    r"(?:.*\.)?(?:language_model|text_model|lm)\.(?:.*\.)?"
    r"(?:q_proj|k_proj|v_proj|o_proj|out_proj|gate_proj|up_proj|down_proj|fc1|fc2|dense)"
)
# Parameters of the vision tower (frozen by `freeze_vision`); the projector/connector stays trainable.
VISION_PARAM_RE = re.compile(r"(?:^|\.)(?:vision_tower|vision_model|visual|vision_encoder|image_encoder)\.")
# projector modules that live inside the vision module in some families (Qwen2-VL's patch merger)
_PROJECTOR_RE = re.compile(r"(?:^|\.)merger\.")

ProgressFn = Callable[[int, int, float], None]


def lora_target_modules(model: torch.nn.Module) -> list[str]:
    """Names of the linear layers LoRA wraps in `model` (the LM's projections)."""
    pattern = re.compile(LM_PROJECTION_RE)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name)
    ]


def vision_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the vision tower's parameters (what `freeze_vision=True` freezes)."""
    return [
        name
        for name, _ in model.named_parameters()
        if VISION_PARAM_RE.search(name) and not _PROJECTOR_RE.search(name)
    ]


def _num_steps(n: int, batch_size: int, steps: int | None, epochs: float | None) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("finetune: give exactly one of steps or epochs")
    if steps is not None:
        if steps < 0:
            raise ValueError("steps: must be >= 0")
        return int(steps)
    assert epochs is not None
    if epochs < 0:
        raise ValueError("epochs: must be >= 0")
    return int(math.ceil(epochs * n / batch_size))


def _batch_indices(n: int, batch_size: int, total_steps: int, generator: torch.Generator):
    """Yield `total_steps` index batches of min(batch_size, n) from consecutive seeded permutations
    (an epoch boundary does not shorten a batch; each epoch visits every sample once)."""
    size = min(batch_size, n)
    buffer: list[int] = []
    for _ in range(total_steps):
        while len(buffer) < size:
            buffer.extend(torch.randperm(n, generator=generator).tolist())
        batch, buffer = buffer[:size], buffer[size:]
        yield batch


def _call_augment(augment: Callable, images: list[torch.Tensor], generator: torch.Generator):
    try:
        params = inspect.signature(augment).parameters.values()
        positional = [
            p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        takes_generator = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)
    except (TypeError, ValueError):
        takes_generator = False
    return list(augment(images, generator) if takes_generator else augment(images))


@contextmanager
def _seeded(seed: int, device: torch.device):
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _lr_lambda(schedule: str, warmup_steps: int, total: int) -> Callable[[int], float]:
    if schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"schedule: unknown {schedule!r}; use constant, cosine or linear")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant" or total <= warmup_steps:
            return 1.0
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return factor


def finetune(
    adapter: LVLMAdapter,
    images: Sequence[torch.Tensor],
    prompts: Sequence[Prompt],
    *,
    steps: int | None = None,
    epochs: float | None = None,
    lr: float,
    batch_size: int,
    recipe: str = "full",
    freeze_vision: bool = False,
    seed: int = 0,
    augment: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: ProgressFn | None = None,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    adversarial_epsilon: float = 0.0,
) -> list[float]:
    """Fine-tune `adapter.model` in place on (image, prompt) pairs; return the loss of every step.

    - `images`: (3, H, W) tensors in [0, 1] (any sizes; the adapter resizes), `prompts` alike long.
    - exactly one of `steps` (optimizer steps) or `epochs` (steps = ceil(epochs * n / batch_size)).
    - `recipe`: "full" trains every parameter (but the vision tower when `freeze_vision`);
      "lora" trains rank-`lora_rank` LoRA adapters on the language model's projection layers
      (plus nothing else) and merges them back afterwards, so the adapter stays a plain model.
    - `augment(images, generator)` (or `augment(images)`) maps the batch's image list to an
      augmented one before the forward; `generator` is a seeded torch.Generator on CPU.
    - `should_stop()` is polled before every step (cancellation); `progress(step, total, loss)` after.
    - `adversarial_epsilon` > 0: adversarial training (Wong et al. 2020, FGSM from a random start
      in the L-inf ball of that radius): each batch's images are first moved to raise the loss, and
      the step is taken on them, so the model learns features a small perturbation cannot flip.
    - AdamW (`weight_decay`), gradient clipping at `max_grad_norm` (None: off), learning-rate
      `schedule` "constant" | "cosine" | "linear" after `warmup_steps` linear warm-up.

    The model is in train() mode during the loop and left in eval() mode after it; parameters'
    requires_grad flags are restored to what they were."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe: unknown {recipe!r}; use one of {', '.join(RECIPES)}")
    if len(images) != len(prompts):
        raise ValueError(f"finetune: {len(images)} images but {len(prompts)} prompts")
    if batch_size < 1:
        raise ValueError("batch_size: must be >= 1")
    n = len(images)
    total = _num_steps(n, batch_size, steps, epochs)
    history: list[float] = []
    if n == 0 or total == 0:
        adapter.model.eval()
        return history

    model = adapter.model
    device = adapter.device
    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    lora_model = None
    with _seeded(seed, device):
        try:
            if recipe == "lora":
                lora_model = _attach_lora(model, lora_rank, lora_alpha)
            else:
                for p in model.parameters():
                    p.requires_grad_(True)
            if freeze_vision:
                frozen = set(vision_parameter_names(model))
                for name, p in model.named_parameters():
                    if name in frozen:
                        p.requires_grad_(False)
            params = [p for p in model.parameters() if p.requires_grad]
            if not params:
                raise ValueError("finetune: no trainable parameters")
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, _lr_lambda(schedule, warmup_steps, total)
            )
            shuffle = torch.Generator().manual_seed(int(seed))
            aug_gen = torch.Generator().manual_seed(int(seed) + 7919)
            model.train()
            for step, batch in enumerate(_batch_indices(n, batch_size, total, shuffle)):
                if should_stop is not None and should_stop():
                    break
                batch_images = [images[i].detach().to(device) for i in batch]
                if augment is not None:
                    batch_images = _call_augment(augment, batch_images, aug_gen)
                batch_prompts = [prompts[i] for i in batch]
                if adversarial_epsilon > 0:
                    batch_images = _adversarial_images(adapter, batch_images, batch_prompts, adversarial_epsilon,
                                                       aug_gen)
                out = adapter.forward(batch_images, batch_prompts)
                loss = out.loss.float().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                history.append(value)
                if progress is not None:
                    progress(step + 1, total, value)
        finally:
            if lora_model is not None:
                _merge_lora(lora_model)
            for name, p in model.named_parameters():
                p.requires_grad_(saved_flags.get(name, True))
            model.zero_grad(set_to_none=True)
            model.eval()
    return history


def _adversarial_images(adapter: LVLMAdapter, images: list[torch.Tensor], prompts: list[Prompt], epsilon: float,
                        generator: torch.Generator) -> list[torch.Tensor]:
    """One FGSM step of 1.25 epsilon from a uniform random start, projected back to the epsilon
    ball and [0, 1] (the "fast" adversarial training recipe: one extra forward and backward)."""
    starts = [(torch.rand(img.shape, generator=generator) * 2 - 1).to(img.device) * epsilon for img in images]
    deltas = [d.requires_grad_(True) for d in starts]
    loss = adapter.forward([(img + d).clamp(0, 1) for img, d in zip(images, deltas, strict=True)], prompts).loss
    grads = torch.autograd.grad(loss.float().mean(), deltas)  # input gradients only: no parameter .grad
    with torch.no_grad():
        return [(img + (d + 1.25 * epsilon * g.sign()).clamp(-epsilon, epsilon)).clamp(0, 1)
                for img, d, g in zip(images, deltas, grads, strict=True)]


def _attach_lora(model: torch.nn.Module, rank: int, alpha: float):
    from peft import LoraConfig, LoraModel

    targets = lora_target_modules(model)
    if not targets:
        raise ValueError("recipe 'lora': no language-model projection layers found in the model")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, bias="none")
    # LoraModel injects the LoRA layers into `model` in place (adapter.model keeps working) and
    # marks only the LoRA weights trainable.
    return LoraModel(model, config, "default")


def _merge_lora(lora_model) -> None:
    # merges every LoRA delta into its base weight and puts the plain layers back, in place
    lora_model.merge_and_unload(progressbar=False)
    inner = lora_model.model
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in getattr(inner, "__dict__", {}):
            try:
                delattr(inner, attr)
            except AttributeError:
                pass


@torch.no_grad()
def predict_exact(
    adapter: LVLMAdapter, images: Sequence[torch.Tensor], prompts: Sequence[Prompt], batch_size: int = 32
) -> torch.Tensor:
    """(N,) bool: greedy exact match of each sample (AdapterOutput.exact), in eval mode, no grad."""
    if len(images) != len(prompts):
        raise ValueError(f"predict_exact: {len(images)} images but {len(prompts)} prompts")
    adapter.model.eval()
    device = adapter.device
    parts: list[torch.Tensor] = []
    for start in range(0, len(images), batch_size):
        batch_images = [img.to(device) for img in images[start : start + batch_size]]
        out = adapter.forward(batch_images, list(prompts[start : start + batch_size]))
        parts.append(out.exact.detach().bool().cpu())
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


def evaluate_exact(
    adapter: LVLMAdapter, images: Sequence[torch.Tensor], prompts: Sequence[Prompt], batch_size: int = 32
) -> float:
    """Exact-match accuracy: mean of AdapterOutput.exact over the samples (0.0 when empty)."""
    exact = predict_exact(adapter, images, prompts, batch_size)
    return float(exact.float().mean()) if exact.numel() else 0.0
