"""MMGuard in two stages, so one job can be split over many workers.

Stage 1, `learn_shared` (once per job, over the whole dataset): group the samples (by answer or by
image cluster), learn one error-minimising noise pattern per group by alternating with a simulated
attacker who fine-tunes copies of the surrogates on the current protected data (min-min, bi-level,
stopped early once the surrogates' loss on protected data falls below `stop_loss`), then search one
trigger per group on clean images. The result, `SharedState`, is small and saved with the job.

Stage 2, `protect_shard` (per shard, any worker): apply each sample's group pattern and refine a
per-sample part (a `sample_share` of epsilon; all of it when the shared stage is off) against the
surrogates, insert the group trigger, and quantise to 8 bits with the L-inf bound enforced on the
saved values. The per-sample part is error-minimising (`sample_objective` "minimize") or, by default
since the tenth session, targeted: crafted against copies of the surrogates fine-tuned on the
shard's clean samples so that each image reads as the next group's answer (an adversarial poison):
a victim then finds the true feature contradicted by the labels and the trigger the one reliable cue.

Noise is optimised with the trigger absent and the trigger scored on clean images: each must be a
working shortcut on its own (the probes saw joint optimisation let the trigger absorb the loss).
The exception is the binding losses, which act on the attention between answer, trigger and
perturbed patches: when they are on, the per-sample stage (and `binding_steps` of the shared one,
after the trigger search) optimise the protected sample whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mmguard_core.config import CLASSIFIER_ARCHITECTURES, ProtectionConfig
from mmguard_core.data.images import quantize_with_bound
from mmguard_core.engine import noise
from mmguard_core.engine.ensemble import Surrogate, balanced_backward, protection_loss, resolve_device
from mmguard_core.engine.feature_target import build_anchor, supports_states
from mmguard_core.engine.grouping import Grouping, choose_structure, image_features, nearest_targets
from mmguard_core.engine.transforms import apply_random
from mmguard_core.engine.trigger_race import alternative_triggers, race_triggers
from mmguard_core.engine.triggers import base_prompt, search_triggers, trigger_words_needed, with_trigger
from mmguard_core.engine.weight_noise import weight_noise

Progress = Callable[[int, int, str], None]
StopCheck = Callable[[], bool]


class ProtectionCancelled(Exception):
    """should_stop() returned True; nothing was written."""


@dataclass
class ShardInput:
    images: list[torch.Tensor]  # (3, H, W) float in [0, 1], exactly original_uint8 / 255
    questions: list[str | None]
    answers: list[str]
    indices: list[int]  # dataset-wide sample indices (seeding and reporting)


@dataclass
class SharedState:
    """What every shard of a job must agree on."""

    method: str
    grouping: Grouping | None
    patterns: torch.Tensor | None  # (G, 3, gh, gw) shared noise, None when the method has none
    triggers: list[list[str]]
    loss_curve: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage
    forward_seconds: float = 0.0  # time inside surrogate forward/backward passes
    trigger_race: list[float] = field(default_factory=list)  # clean loss per raced assignment (0 = searched)

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "method": self.method,
            "grouping": self.grouping.to_dict() if self.grouping else None,
            "triggers": self.triggers,
            "loss_curve": self.loss_curve,
            "stages": self.stages,
            "forward_seconds": self.forward_seconds,
            "trigger_race": self.trigger_race,
        }
        (folder / "shared.json").write_text(json.dumps(meta))
        if self.patterns is not None:
            save_file({"patterns": self.patterns.contiguous()}, str(folder / "patterns.safetensors"))

    @classmethod
    def load(cls, folder: str | Path) -> SharedState:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / "shared.json").read_text())
        tensors = folder / "patterns.safetensors"
        patterns = load_file(str(tensors))["patterns"] if tensors.exists() else None
        grouping = Grouping.from_dict(meta["grouping"]) if meta["grouping"] else None
        return cls(meta["method"], grouping, patterns, meta["triggers"], meta["loss_curve"],
                   meta.get("stages", {}), meta.get("forward_seconds", 0.0), meta.get("trigger_race", []))


@dataclass
class ShardOutput:
    images: list[np.ndarray]  # (H, W, 3) uint8, the bound enforced
    prompts_question: list[str | None]  # question text to write back (trigger inserted), None for captions
    answers: list[str]  # answer / caption text to write back
    triggers: list[str | None]
    loss_curve: list[float]
    seconds: float
    forward_seconds: float
    # what the per-sample noise did: "minimize", "targeted", or "none" (no per-sample steps); a
    # targeted config falls back to "minimize" when the shard holds a single group
    sample_objective: str = "minimize"
    clean_task_seconds: float = 0.0  # fine-tuning the clean-task copies the targeted noise needs


class _Clock:
    """Counts the time spent inside surrogate passes (the benchmark's share-of-time figure)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def loss(self, models: Sequence[Surrogate], *args, leaves: Sequence[Sequence[torch.Tensor]] | None = None,
             **kwargs) -> torch.Tensor:
        """The protection loss (arguments as `protection_loss`), its gradient left in the noise; with
        `leaves` (the per-sample stage under `ensemble_gradient` "balanced") each surrogate's gradient is
        balanced first."""
        start = time.perf_counter()
        if leaves is not None:
            value = balanced_backward(models, leaves, *args, **kwargs)
        else:
            value = protection_loss(models, *args, **kwargs)
            value.backward()
        self.seconds += time.perf_counter() - start
        return value.detach()


def _check(should_stop: StopCheck | None) -> None:
    if should_stop is not None and should_stop():
        raise ProtectionCancelled("cancelled")


EM_IMAGE_MIN_STEPS = 30


def _generator(seed: int, *salt: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed((seed * 1_000_003 + sum((i + 1) * s for i, s in enumerate(salt)) * 7919) % (2**63))
    return gen


def _eot(images: Sequence[torch.Tensor], config: ProtectionConfig, gen: torch.Generator) -> list[torch.Tensor]:
    return [apply_random(img[None], config.eot_transforms, gen)[0] for img in images]


def _shared_bound(config: ProtectionConfig) -> float:
    return config.epsilon * (1 - config.sample_share)


def _sample_bound(config: ProtectionConfig) -> float:
    return config.epsilon * config.sample_share


# ---------------------------------------------------------------------------------------------
# Stage 1
# ---------------------------------------------------------------------------------------------
def learn_shared(
    data: ShardInput,
    surrogates: Sequence[Surrogate],
    config: ProtectionConfig,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> SharedState:
    """Learn the per-group patterns and triggers over the whole dataset."""
    clock = _Clock()
    stages: dict[str, float] = {}
    gen = _generator(config.seed, 1)
    # its own stream, so turning weight_noise on changes the patterns and nothing else (same batches,
    # transformations and trigger words as without it)
    augment_gen = _generator(config.seed, 3)
    torch.manual_seed(config.seed)
    method = config.method
    if method in ("random", "em_image"):
        return SharedState(method, None, None, [], stages=stages)

    structure = choose_structure(config.noise_structure, data.answers)
    # triggers are always per group; "sample" only means the image noise is not shared
    group_rule = structure if structure != "sample" else choose_structure("auto", data.answers)
    grouping = Grouping.fit(group_rule, data.answers, data.images, config.num_clusters, config.seed)
    groups = grouping.assign(data.answers, data.images)
    num_groups = len(grouping.keys)
    if config.target_choice == "nearest":
        grouping.targets = nearest_targets(image_features(data.images), groups, num_groups)
    grid = noise.grid_shape(data.images, config.noise_scale)
    if method == "classwise":  # unoptimised baseline: one random full-bound sign code per group
        patterns = noise.init_patterns(num_groups, grid, config.epsilon, gen) * 2
        return SharedState(method, grouping, patterns, [[] for _ in range(num_groups)], stages=stages)
    bound = _shared_bound(config)
    patterns = noise.init_patterns(num_groups, grid, bound, gen)
    shared_steps = config.shared_steps if structure != "sample" else 0

    binding_steps = config.binding_steps if config.uses_binding and shared_steps else 0
    total = shared_steps + num_groups * trigger_words_needed(config) + binding_steps
    done = 0
    curve: list[float] = []
    started = time.perf_counter()
    attackers = ([Surrogate(s.name, s.adapter.clone()) for s in surrogates]
                 if config.bilevel_rounds and shared_steps else list(surrogates))
    rounds = max(1, config.bilevel_rounds) if shared_steps else 0
    steps_per_round = [shared_steps // rounds + (1 if r < shared_steps % rounds else 0) for r in range(rounds)]
    prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    stopped_early = False
    for round_index in range(rounds):
        if config.bilevel_rounds:
            _check(should_stop)
            if progress:
                progress(done, total, "attacker simulation")
            t0 = time.perf_counter()
            _simulate_attacker(attackers, data, patterns, groups, prompts, config, round_index)
            clock.seconds += time.perf_counter() - t0
        for _ in range(steps_per_round[round_index]):
            _check(should_stop)
            patterns, loss = _pattern_step(attackers, data, patterns, groups, num_groups, prompts, prompts,
                                           config, gen, clock, bound, augment_gen)
            curve.append(loss)
            done += 1
            if progress:
                progress(done, total, "shared noise")
        if _converged(curve, config):
            stopped_early = True
            break
    stages["shared_noise"] = time.perf_counter() - started

    if progress:
        progress(done, total, "trigger search")
    started = time.perf_counter()
    t0 = time.perf_counter()
    race: list[float] = []
    triggers = search_triggers(surrogates, data.images, data.questions, data.answers, groups, num_groups,
                               config, gen, should_stop=should_stop)
    clock.seconds += time.perf_counter() - t0
    _check(should_stop)
    if config.trigger_trials > 1 and any(triggers):
        if progress:
            progress(done, total, "trigger race")
        t0 = time.perf_counter()
        candidates = [triggers] + [alternative_triggers(data.questions, data.answers, num_groups, config, gen)
                                   for _ in range(config.trigger_trials - 1)]
        triggers, race = race_triggers(surrogates, data, patterns if shared_steps else None, groups, candidates,
                                       config, gen, should_stop=should_stop)
        clock.seconds += time.perf_counter() - t0
    stages["trigger_search"] = time.perf_counter() - started
    stages["stopped_early"] = float(stopped_early)
    if binding_steps and any(triggers):
        started = time.perf_counter()
        triggered = [with_trigger(q, a, triggers[g], config)
                     for q, a, g in zip(data.questions, data.answers, groups, strict=True)]
        for _ in range(binding_steps):
            _check(should_stop)
            patterns, loss = _pattern_step(attackers, data, patterns, groups, num_groups, triggered, prompts,
                                           config, gen, clock, bound, augment_gen)
            curve.append(loss)
            done += 1
            if progress:
                progress(done, total, "binding")
        stages["binding"] = time.perf_counter() - started
    del attackers
    if progress:
        progress(total, total, "binding" if "binding" in stages else "trigger search")
    kept = patterns.detach() if shared_steps else None
    return SharedState(method, grouping, kept, triggers, curve, stages, clock.seconds, race)


def _pattern_step(models, data: ShardInput, patterns: torch.Tensor, groups, num_groups: int, prompts,
                  clean_prompts, config: ProtectionConfig, gen: torch.Generator, clock: _Clock,
                  bound: float, augment_gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """One signed PGD step on the group patterns over a stratified batch (EOT applied); `prompts` are
    what the models see, `clean_prompts` the binding losses' clean reference."""
    batch = _stratified_batch(groups, num_groups, config.batch_size, gen)
    patterns.requires_grad_(True)
    perturbed = [noise.compose(data.images[i], patterns[groups[i]], None) for i in batch]
    with weight_noise([m.adapter.model for m in models], config.weight_noise, augment_gen):
        loss = clock.loss(models, _eot(perturbed, config, gen), [prompts[i] for i in batch], config,
                          clean_images=[data.images[i] for i in batch],
                          clean_prompts=[clean_prompts[i] for i in batch])
    noise.pgd_step(patterns, patterns.grad, config.step_size * config.epsilon, bound)
    return patterns.detach(), float(loss)


def _converged(curve: list[float], config: ProtectionConfig, window: int = 5) -> bool:
    return len(curve) >= window and float(np.mean(curve[-window:])) < config.stop_loss


def _stratified_batch(groups: Sequence[int], num_groups: int, size: int, gen: torch.Generator) -> list[int]:
    """A batch whose slots draw a group uniformly, then a member of it: groups are equally likely
    whatever their size, so small groups' patterns move as often as large ones'."""
    by_group: list[list[int]] = [[] for _ in range(num_groups)]
    for index, group in enumerate(groups):
        by_group[group].append(index)
    present = [g for g in range(num_groups) if by_group[g]]
    batch = []
    for k in range(size):
        members = by_group[present[(k + int(torch.randint(0, len(present), (), generator=gen))) % len(present)]]
        batch.append(members[int(torch.randint(0, len(members), (), generator=gen))])
    return batch


def _simulate_attacker(attackers, data: ShardInput, patterns, groups, prompts, config: ProtectionConfig,
                       round_index: int) -> None:
    """Inner level: a few fine-tuning steps of each surrogate copy on the current protected data."""
    from mmguard_core.models.training import finetune

    with torch.no_grad():
        protected = [noise.compose(img, patterns[g], None) for img, g in zip(data.images, groups, strict=True)]
    # finetune makes the parameters trainable for its steps, then restores their flags and eval mode
    for k, attacker in enumerate(attackers):
        finetune(attacker.adapter, protected, prompts, steps=config.inner_steps, lr=config.inner_lr,
                 batch_size=config.batch_size, recipe=config.inner_recipe, seed=config.seed + 31 * round_index + k)


# ---------------------------------------------------------------------------------------------
# Stage 2
# ---------------------------------------------------------------------------------------------
def protect_shard(
    data: ShardInput,
    shared: SharedState,
    surrogates: Sequence[Surrogate],
    config: ProtectionConfig,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> ShardOutput:
    """Perturb and trigger one shard of samples; deterministic for (seed, shard)."""
    started = time.perf_counter()
    clock = _Clock()
    method = shared.method
    groups = shared.grouping.assign(data.answers, data.images) if shared.grouping else [0] * len(data.images)
    n = len(data.images)
    own_bound = {"random": config.epsilon, "em_image": config.epsilon, "classwise": 0.0}.get(
        method, _sample_bound(config) if shared.patterns is not None else config.epsilon)
    full_steps = config.shared_steps + config.sample_steps
    # the sample-wise error-minimising baseline keeps a budget of its own now that the presets run
    # no shared steps (the ninth session's rows ran 70 = strong's 60 + 10)
    steps = {"random": 0, "classwise": 0, "em_image": max(full_steps, EM_IMAGE_MIN_STEPS)}.get(
        method, config.sample_steps if shared.patterns is not None else full_steps)
    # the per-sample noise: one part on the image's grid (or sample_noise_scale times coarser), or with
    # sample_fine_share a smooth part and a pixel-level part, each bounded by its share so the sum stays
    # within own_bound
    fine_share = config.sample_fine_share  # 0 unless sample_noise_scale > 1 (the config checks it)

    def noise_parts(image: torch.Tensor) -> list[tuple[tuple[int, int], float]]:
        """(grid, bound) of each part of one image's own noise."""
        coarse = (noise.sample_grid(image, config.sample_noise_scale), own_bound * (1 - fine_share))
        return [coarse] + ([(tuple(image.shape[-2:]), own_bound * fine_share)] if fine_share > 0 else [])

    outputs: list[np.ndarray] = []
    curve: list[float] = []
    clean_prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    group_words = [shared.triggers[g] if shared.triggers else [] for g in groups]
    protected_prompts = [with_trigger(q, a, words, config)
                         for q, a, words in zip(data.questions, data.answers, group_words, strict=True)]
    # The binding losses act on the attention between answer, trigger and perturbed patches, so the
    # per-sample stage sees the protected sample whole (noise and trigger, the paper's l_prot(x~, t~, y))
    # when they are on; without them the noise is refined with the trigger absent (module docstring).
    targeted = (method == "mmguard" and config.sample_objective == "targeted" and steps > 0 and own_bound > 0
                and len(set(groups)) > 1)
    binding = config.uses_binding and bool(shared.triggers) and not targeted
    prompts = protected_prompts if binding else clean_prompts
    models: Sequence[Surrogate] = surrogates
    clean_task_seconds = 0.0
    if targeted:
        _check(should_stop)
        t0 = time.perf_counter()
        models = _clean_task_copies(surrogates, data, clean_prompts, config, progress, should_stop)
        models = models + _classifier_copies(data, groups, shared.grouping, config)
        if config.target_feature_weight > 0:
            models = _anchored(models, data, clean_prompts, config)
        clean_task_seconds = time.perf_counter() - t0
        clock.seconds += clean_task_seconds
        _check(should_stop)
        targets = target_answers(data.answers, groups, data.indices, shared.grouping)
        prompts = [base_prompt(q, t) for q, t in zip(data.questions, targets, strict=True)]
    for start in range(0, n, config.batch_size):
        _check(should_stop)
        batch = list(range(start, min(n, start + config.batch_size)))
        gen = _generator(config.seed, 2, data.indices[batch[0]])
        shared_parts = [shared.patterns[groups[i]] if shared.patterns is not None else None for i in batch]
        layouts = [noise_parts(data.images[i]) for i in batch]
        if method == "random":
            own = [[(torch.randint(0, 2, data.images[i].shape, generator=gen).float() * 2 - 1) * own_bound]
                   for i in batch]
        else:
            own = [[data.images[i].new_zeros(3, *grid) for grid, _ in layout]
                   for i, layout in zip(batch, layouts, strict=True)]
        velocity = [[torch.zeros_like(d) for d in parts] for parts in own]
        # its own stream, so turning sample_weight_noise on changes the weights' draws and nothing else
        augment_gen = _generator(config.seed, 4, data.indices[batch[0]])
        for _ in range(steps if own_bound > 0 else 0):
            for parts in own:
                for delta in parts:
                    delta.requires_grad_(True)
            perturbed = [noise.compose(data.images[i], s, d) for i, s, d in zip(batch, shared_parts, own, strict=True)]
            clean = ({"clean_images": [data.images[i] for i in batch],
                      "clean_prompts": [clean_prompts[i] for i in batch]} if binding else {})
            with weight_noise([m.adapter.model for m in models], config.sample_weight_noise, augment_gen):
                loss = clock.loss(models, _eot(perturbed, config, gen), [prompts[i] for i in batch], config, **clean,
                                  answer_loss=config.target_loss if targeted else "ce",
                                  own_answers=[clean_prompts[i].answer for i in batch] if targeted else None,
                                  leaves=own if config.ensemble_gradient == "balanced" else None)
            for j, (parts, layout) in enumerate(zip(own, layouts, strict=True)):
                for p, (delta, (_, bound)) in enumerate(zip(parts, layout, strict=True)):
                    direction = delta.grad
                    if config.momentum > 0:
                        # MI-FGSM (Dong et al. 2018): the sign of an accumulated, L1-normalised gradient, so
                        # one EOT draw's gradient does not decide the step on its own
                        velocity[j][p] = (config.momentum * velocity[j][p]
                                          + direction / direction.abs().mean().clamp_min(1e-12))
                        direction = velocity[j][p]
                    noise.pgd_step(delta, direction, config.step_size * max(bound, 1e-12), bound)
            own = [[d.detach() for d in parts] for parts in own]
            curve.append(float(loss))
        with torch.no_grad():
            for i, s, d in zip(batch, shared_parts, own, strict=True):
                outputs.append(_quantise(data.images[i], noise.compose(data.images[i], s, d), config.epsilon))
        if progress:
            progress(batch[-1] + 1, n, "sample noise")

    questions: list[str | None] = []
    answers: list[str] = []
    triggers: list[str | None] = []
    for i, (words, prompt) in enumerate(zip(group_words, protected_prompts, strict=True)):
        trigger = " ".join(words) if words and config.trigger_placement != "off" else None
        triggers.append(trigger)
        if data.questions[i] is None:
            # caption data: the instruction carries the trigger only when placed there
            questions.append(prompt.question if trigger and not prompt.trigger_in_answer else None)
        else:
            questions.append(prompt.question)
        answers.append(prompt.answer)
    objective = "none" if not steps or own_bound <= 0 else "targeted" if targeted else "minimize"
    return ShardOutput(outputs, questions, answers, triggers, curve, time.perf_counter() - started, clock.seconds,
                       objective, clean_task_seconds)


def target_answers(answers: Sequence[str], groups: Sequence[int], indices: Sequence[int],
                    grouping: Grouping) -> list[str]:
    """Each sample's target for the targeted objective: an answer of its group's target group in the
    job's grouping (`Grouping.target_of`: the next group, g -> g + 1 cyclically, or with `target_choice`
    "nearest" the group that looks most like it), so every image of one group is pushed towards the same
    other answer in every shard (class-consistent, the form that poisoned best in Fowl et al.).

    The text is a shard member's answer of that group; for answer groups missing from the shard, the
    group's key (its normalised answer); for clusters missing from it, the next cluster the shard holds.
    Which member: picked by the sample's dataset index, so the choice does not depend on the split."""
    num_groups = len(grouping.keys)
    keys = grouping.keys if grouping.structure == "answer" else None
    members: dict[int, list[int]] = {}
    for position, group in enumerate(groups):
        members.setdefault(group, []).append(position)
    targets = []
    for position, group in enumerate(groups):
        target = None
        candidates = [grouping.target_of(group), *((group + step) % num_groups for step in range(1, num_groups))]
        for following in candidates:
            if following == group:
                continue
            if following in members:
                pool = members[following]
                target = answers[pool[indices[position] % len(pool)]]
                break
            if keys is not None:
                target = keys[following]
                break
        targets.append(answers[position] if target is None else target)
    return targets


def _clean_task_copies(surrogates: Sequence[Surrogate], data: ShardInput, clean_prompts,
                       config: ProtectionConfig, progress: Progress | None = None,
                       should_stop: StopCheck | None = None) -> list[Surrogate]:
    """Copies of the surrogates fine-tuned on this shard's clean samples for `target_steps`, so they
    read the task's true feature: the targeted objective needs a model that knows which answer an
    image shows (0 steps: the surrogates as loaded, for models that already know the task). With
    `robust_epsilon` > 0 the fine-tune is adversarial, so the copies read features a small
    perturbation cannot flip and the noise made on them transfers further (method.md); with
    `plain_copies` each surrogate also gets a plain copy, and the noise has to fool both; with
    `lora_copies` also a LoRA-tuned one (its vision tower as pretrained)."""
    from mmguard_core.models.training import LORA_LR_FACTOR, finetune

    if config.target_steps == 0:
        return list(surrogates)
    radii = [config.robust_epsilon] + ([0.0] if config.plain_copies and config.robust_epsilon > 0 else [])
    plan = [(r, k, surrogate, radius, config.inner_recipe, config.inner_lr)
            for r, radius in enumerate(radii) for k, surrogate in enumerate(surrogates)]
    if config.lora_copies:
        # after the others, under seeds of their own, so adding them leaves those copies as they were
        plan += [(len(radii), k, surrogate, 0.0, "lora", config.inner_lr * LORA_LR_FACTOR)
                 for k, surrogate in enumerate(surrogates)]
    copies = []
    for n, (r, k, surrogate, radius, recipe, lr) in enumerate(plan):
        _check(should_stop)
        copy = Surrogate(surrogate.name, surrogate.adapter.clone())  # one at a time: a cancel clones no more
        copies.append(copy)

        def report(step: int, _steps: int, _loss: float, done: int = n * config.target_steps) -> None:
            if progress:
                progress(done + step, config.target_steps * len(plan), "clean-task surrogates")

        # leaves the copy frozen and in eval mode; the first copy of a surrogate keeps the seed it
        # always had, so adding plain copies leaves the robust ones as they were
        finetune(copy.adapter, list(data.images), clean_prompts,
                 steps=config.target_steps, lr=lr,
                 batch_size=config.batch_size, recipe=recipe,
                 seed=config.seed + 17 + k + 1000 * r,
                 adversarial_epsilon=radius, should_stop=should_stop, progress=report)
    return copies


def _anchored(models: Sequence[Surrogate], data: ShardInput, clean_prompts,
              config: ProtectionConfig) -> list[Surrogate]:
    """The models with each LVLM copy's clean image states of this shard attached (the feature term of
    `target_feature_weight`, engine/feature_target.py); new Surrogate objects, so the loaded ensemble
    (which the copies are when `target_steps` is 0) carries no shard's anchor into the next."""
    return [replace(m, anchor=build_anchor(m.adapter, data.images, clean_prompts, config.batch_size))
            if supports_states(m.adapter) else m for m in models]


def _classifier_copies(data: ShardInput, groups: Sequence[int], grouping: Grouping,
                       config: ProtectionConfig) -> list[Surrogate]:
    """With `classifier_steps`: image-only classifiers trained from scratch on the shard's clean
    samples, one per radius the LVLM copies use (robust, and plain beside it with `plain_copies`)."""
    from mmguard_core.engine.image_classifier import train_group_classifier

    if config.classifier_steps == 0:
        return []
    radii = [config.robust_epsilon] + ([0.0] if config.plain_copies and config.robust_epsilon > 0 else [])
    # a target may name a group the shard does not hold by its key (target_answers)
    keys = {key: j for j, key in enumerate(grouping.keys)} if grouping.structure == "answer" else {}
    # the CNN keeps the name and seed it had before there was a choice, so its noise is unchanged
    return [Surrogate(f"image-classifier@{radius:.4f}" if arch == "cnn" else f"image-classifier-{arch}@{radius:.4f}",
                      train_group_classifier(data.images, groups, data.answers, len(grouping.keys),
                                             config.classifier_steps, config.batch_size,
                                             seed=config.seed + 29 + 1000 * r + 7 * CLASSIFIER_ARCHITECTURES.index(arch), adversarial_epsilon=radius,
                                             known_groups=keys, architecture=arch,
                                             device=resolve_device(config.device)),  # type: ignore[arg-type]
                      weight=config.classifier_weight)
            for arch in config.classifier_architectures for r, radius in enumerate(radii)]


def _quantise(original: torch.Tensor, perturbed: torch.Tensor, epsilon: float) -> np.ndarray:
    """8-bit (H, W, 3) image within floor(epsilon * 255) of the original on every saved value."""
    base = (original * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return quantize_with_bound(base, perturbed.permute(1, 2, 0).double().numpy(), epsilon)
