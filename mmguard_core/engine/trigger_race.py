"""Pick the trigger assignment a simulated attacker learns as a shortcut most readily.

The word search (triggers.py) scores words by the surrogates' loss on the answer, which says little
about the question that matters: does a model fine-tuned on the protected data still learn the real
feature? The race asks it directly, one level up (bi-level, like the noise): for each candidate
assignment of triggers to groups, a copy of every surrogate is fine-tuned for `trigger_trial_steps`
on the protected training data (shared noise applied, that assignment's triggers inserted), then
scored on clean samples (clean image, no trigger). The assignment after which the copies' clean
loss is highest wins. Candidates: the searched assignment and `trigger_trials - 1` seeded
alternatives drawn from the same vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mmguard_core.config import ProtectionConfig
from mmguard_core.engine import noise
from mmguard_core.engine.ensemble import Surrogate, to_device
from mmguard_core.engine.triggers import (
    base_prompt,
    compose_trigger,
    distinct_words_needed,
    rare_pool,
    shared_code_part,
    with_trigger,
)

CLEAN_PROBE = 64  # clean samples each simulated attacker is scored on


def alternative_triggers(questions: Sequence[str | None], answers: Sequence[str], num_groups: int,
                         config: ProtectionConfig, gen: torch.Generator) -> list[list[str]]:
    """One seeded assignment from the configured vocabulary: shared codes over a freshly drawn word
    set, or distinct candidate words (no word in two groups while the pool lasts)."""
    texts = [q or "" for q in questions] + list(answers)
    length = distinct_words_needed(config)
    codes = shared_code_part(texts, num_groups, config, gen)
    if not length:
        return codes
    pool = rare_pool(texts, codes)
    order = [pool[i] for i in torch.randperm(len(pool), generator=gen).tolist()]
    triggers: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for group in range(num_groups):
        start = (group * length) % max(1, len(order))
        words = [order[(start + k) % len(order)] for k in range(length)]
        while tuple(words) in seen:  # the pool wrapped around: reshuffle this group's words
            words = [order[i] for i in torch.randperm(len(order), generator=gen)[:length].tolist()]
        seen.add(tuple(words))
        triggers.append(compose_trigger(words, codes[group], config))
    return triggers


def race_triggers(
    surrogates: Sequence[Surrogate],
    data,
    patterns: torch.Tensor | None,
    groups: Sequence[int],
    candidates: Sequence[list[list[str]]],
    config: ProtectionConfig,
    gen: torch.Generator,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[list[str]], list[float]]:
    """The candidate assignment with the highest clean loss after a simulated attack (see module doc),
    and every candidate's clean loss, in the candidates' order. A stop request returns the first
    candidate and the losses measured so far."""
    from mmguard_core.models.training import finetune

    with torch.no_grad():
        protected = [noise.compose(img, patterns[g] if patterns is not None else None, None)
                     for img, g in zip(data.images, groups, strict=True)]
    probe = torch.randperm(len(data.images), generator=gen)[:CLEAN_PROBE].tolist()
    clean_images = [data.images[i] for i in probe]
    clean_prompts = [base_prompt(data.questions[i], data.answers[i]) for i in probe]
    scores: list[float] = []
    for triggers in candidates:
        prompts = [with_trigger(q, a, triggers[g], config)
                   for q, a, g in zip(data.questions, data.answers, groups, strict=True)]
        losses = []
        for k, surrogate in enumerate(surrogates):
            if should_stop is not None and should_stop():
                return candidates[0], scores
            attacker = surrogate.adapter.clone()
            for param in attacker.model.parameters():
                param.requires_grad_(True)
            finetune(attacker, protected, prompts, steps=config.trigger_trial_steps, lr=config.inner_lr,
                     batch_size=config.batch_size, recipe=config.inner_recipe, seed=config.seed + 7 * k)
            attacker.model.eval()
            with torch.no_grad():
                out = attacker.forward(to_device(clean_images, attacker), clean_prompts)
            losses.append(float(out.loss.float().mean()))
            del attacker
        scores.append(sum(losses) / len(losses))
    best = max(range(len(candidates)), key=lambda i: scores[i])
    return list(candidates[best]), scores
