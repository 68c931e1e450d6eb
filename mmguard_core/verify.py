"""Per-job verification: a budgeted simulated attack on a model the protection never saw.

After a job has protected its data, the owner's question is "would a model someone fine-tunes on
this copy learn my task?". This module answers it for one held-out victim within a fixed budget:

1. a seeded split of the job's own samples into a clean test part (never trained on) and a train
   part (at most `verify_samples`);
2. one fresh copy of the victim fine-tuned on the *clean* train part, and one on the *protected*
   version of the same samples (as written: quantised images, trigger in the question), then one
   more per countermeasure in VERIFY_COUNTERMEASURES (JPEG q75, downscale ½ and back) applied to the
   protected part;
3. every copy scored by exact match on the clean test part, and protection
   1 - (acc_protected - floor) / (acc_clean - floor) as in `mmguard_core.evaluate`;
4. with `verify_seeds` > 1 all of it again per victim fine-tuning seed, the accuracies averaged
   (each seed's own figures are kept in `runs`).

The victim is chosen outside the ensemble (`resolve_verify_victim`), so the figure is a black-box
one, and "auto" picks the held-out family that has been hardest to protect on our benchmark. It is a
single model on a few hundred samples: on our benchmark the victim's own fine-tuning seed moves the
figure by about ±0.2 and the held-out model by more (docs/evaluation.md), and the report says so. Open-ended answers (captions) have no exact-match score,
so verification reports "skipped" with the reason instead of a number nobody should read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard_core.config import ConfigError, ProtectionConfig, check_model_spec, parse_zoo_spec
from mmguard_core.engine.grouping import choose_structure

VERIFY_COUNTERMEASURES = ("jpeg75", "downscale")
MIN_TRAIN, MIN_TEST = 24, 12
MAX_TEST = 200
LEARNED_MARGIN = 0.1  # the clean-trained victim must beat the floor by this much for a verdict
SPREAD_NOTE = ("one held-out model, {seeds}, a subset of the job's samples; on our benchmark the victim's own "
               "training seed moves the figure by about ±0.2 and the held-out model by more (docs/evaluation.md; "
               "verify_seeds averages more victim seeds), so read it as a check, not a guarantee")
# "auto" takes the first family outside the ensemble in this order: the held-out families from the
# hardest to protect on our benchmark to the easiest (docs/evaluation.md, seventh session: Gemma3
# 0.18-0.25, InternVL 0.36-0.81, LLaVA-NeXT 0.47-0.77, Idefics3 0.55-0.77, Qwen2.5-VL 0.77-0.90,
# PaliGemma 1.00 in every run), so the check errs on the pessimistic side
VERIFY_ORDER = ("gemma3", "internvl", "llava_next", "idefics3", "qwen2_5_vl", "paligemma", "llava", "qwen2_vl")


class VerificationCancelled(Exception):
    pass


def resolve_verify_victim(config: ProtectionConfig) -> str:
    """`verify_victim` as given, or for "auto" the first VERIFY_ORDER family outside the ensemble; when
    the ensemble holds every one, the project's non-transformer VQA model (``cnn``)."""
    if config.verify_victim != "auto":
        return config.verify_victim
    from mmguard_core.engine.ensemble import default_surrogate_specs

    specs = config.surrogates or default_surrogate_specs()
    used = {parse_zoo_spec(spec.split(":", 1)[1])[0] for spec in specs if spec.startswith("zoo:")}
    used |= {spec.split(":", 1)[0] for spec in specs if not spec.startswith("zoo:")}
    for family in VERIFY_ORDER:
        if family not in used:
            return f"zoo:{family}"
    return "cnn"


def check_victim(config: ProtectionConfig) -> str:
    """Resolve the verification victim and refuse an unknown one before any protection work starts
    (ConfigError naming verify_victim), so a typo costs seconds, not a whole job."""
    victim = resolve_verify_victim(config)
    prefix, _, rest = victim.partition(":")
    if prefix == "cnn":
        return victim
    check_model_spec("verify_victim", victim)  # the same check a config gets when it is written
    if prefix != "zoo" and not Path(rest).is_dir():
        raise ConfigError(f"verify_victim: {rest!r} is not a checkpoint folder")
    return victim


def closed_answers(answers: Sequence[str]) -> bool:
    """Exact match is a meaningful score only when answers repeat (a closed answer set): the same
    rule by which the engine groups such data per answer."""
    return choose_structure("auto", answers) == "answer"


def split_indices(n: int, max_train: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) positions: test = 20 % of the samples (12 to 200), train = the rest, capped."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 7919)).tolist()
    n_test = min(MAX_TEST, max(MIN_TEST, n // 5))
    return sorted(order[n_test:][:max_train]), sorted(order[:n_test])


def skipped(reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, **extra}


def verify_protection(
    clean_images: Sequence[torch.Tensor],
    questions: Sequence[str | None],
    answers: Sequence[str],
    protected_images: Sequence[np.ndarray],
    protected_questions: Sequence[str | None],
    config: ProtectionConfig,
    *,
    protected_answers: Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """The job report's `verification` section (see the module docstring). `protected_answers`
    (default: `answers`) are the answers as written, which differ only with caption_prefix triggers."""
    from mmguard_core.engine.ensemble import resolve_device
    from mmguard_core.evaluate import (
        COUNTERMEASURES,
        Split,
        VictimRecipe,
        apply_countermeasure,
        from_uint8,
        majority_rate,
        protection_score,
        train_and_score,
    )

    victim = resolve_verify_victim(config)
    device = resolve_device(config.device)
    n = len(answers)
    if n < MIN_TRAIN + MIN_TEST:
        return skipped(f"{n} samples are too few for a held-out check (need at least {MIN_TRAIN + MIN_TEST})",
                       victim=victim)
    if not closed_answers(answers):
        return skipped("the answers are open-ended (captions or free text), so a victim's exact-match accuracy "
                       "says nothing; evaluate such data with `mmguard evaluate` and a metric of your own",
                       victim=victim)
    train_at, test_at = split_indices(n, config.verify_samples, config.seed)
    recipe = VictimRecipe(epochs=config.verify_epochs)
    def pick(values: Sequence, at: list[int]) -> list:
        return [values[i] for i in at]

    written = answers if protected_answers is None else protected_answers
    test = Split(pick(clean_images, test_at), pick(questions, test_at), pick(answers, test_at))
    clean = Split(pick(clean_images, train_at), pick(questions, train_at), pick(answers, train_at))
    protected = Split([from_uint8(img) for img in pick(protected_images, train_at)],
                      pick(protected_questions, train_at), pick(written, train_at))
    floor = majority_rate(test.answers)
    names = ["clean", "none", *VERIFY_COUNTERMEASURES]
    seeds = [config.seed + k for k in range(config.verify_seeds)]
    plan = [(seed, name) for seed in seeds for name in names]
    started = time.perf_counter()
    per_seed: dict[str, list[float]] = {name: [] for name in names}
    torch_rng = torch.get_rng_state()  # the victims seed torch; leave the caller's stream as it was
    try:
        for step, (seed, name) in enumerate(plan):
            if should_stop is not None and should_stop():
                raise VerificationCancelled("cancelled")
            if progress:
                run = f", victim seed {seed}" if len(seeds) > 1 else ""
                progress(step, len(plan), f"verifying: {victim} ({'clean' if name == 'clean' else 'protected'}"
                                          f"{'' if name in ('clean', 'none') else ', ' + name}{run})")
            if name == "clean":
                per_seed[name].append(train_and_score(victim, clean, test, recipe, seed, config.zoo_size,
                                                      device=device))
                continue
            images, qs, augment = apply_countermeasure(name, protected.images, protected.questions, seed)
            per_seed[name].append(train_and_score(victim, Split(images, qs, protected.answers), test, recipe, seed,
                                                  config.zoo_size, augment, device=device))
    finally:
        torch.set_rng_state(torch_rng)
    if progress:
        progress(len(plan), len(plan), "verified")
    accuracy = {name: float(np.mean(values)) for name, values in per_seed.items()}

    def taught(acc_clean: float) -> bool:  # the clean-trained victim learned the task: a verdict is possible
        return acc_clean - floor >= LEARNED_MARGIN

    learned = taught(accuracy["clean"])

    def score(name: str) -> float | None:
        return protection_score(accuracy[name], accuracy["clean"], floor) if learned else None

    result: dict[str, Any] = {
        "status": "done",
        "victim": victim,
        "threat": "black-box: a model left out of the surrogate ensemble",
        "recipe": {"epochs": recipe.epochs, "lr": recipe.lr, "batch_size": recipe.batch_size,
                   "fine_tuning": recipe.recipe, "seed": seeds[0]},
        "seeds": seeds,
        # each victim seed on its own (the figures above are computed from their mean accuracies)
        "runs": [{"seed": seed, "acc_clean_trained": per_seed["clean"][k],
                  "acc_protected_trained": per_seed["none"][k],
                  # None where that seed's clean-trained victim did not learn the task (a near-floor
                  # clean accuracy would make its protection a meaningless large number)
                  "protection": (protection_score(per_seed["none"][k], per_seed["clean"][k], floor)
                                 if taught(per_seed["clean"][k]) else None)}
                 for k, seed in enumerate(seeds)],
        "train_samples": len(train_at),
        "test_samples": len(test_at),
        "floor": floor,
        "acc_clean_trained": accuracy["clean"],
        "acc_protected_trained": accuracy["none"],
        "protection": score("none"),
        "countermeasures": {
            name: {"label": COUNTERMEASURES[name].label, "acc_protected_trained": accuracy[name],
                   "protection": score(name)}
            for name in VERIFY_COUNTERMEASURES
        },
        "seconds": time.perf_counter() - started,
        "note": SPREAD_NOTE.format(seeds="one victim seed" if len(seeds) == 1 else f"{len(seeds)} victim seeds"),
    }
    if not learned:
        result["reason"] = (
            f"the held-out victim did not learn the task from the clean samples either (accuracy "
            f"{accuracy['clean']:.2f}, majority answer {floor:.2f}), so there is no verdict; name a victim "
            "closer to your data with verify_victim, or use more samples (verify_samples)")
    return result
