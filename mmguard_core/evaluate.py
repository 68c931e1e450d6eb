"""The judge: does a victim fine-tuned on the protected copy still learn the task?

A fresh copy of a victim model is fine-tuned on the clean train split and another on the protected
train split with the same recipe; both are scored on the clean test split (clean images, no trigger)
by exact match, and

    protection = 1 - (acc_protected - floor) / (acc_clean - floor)

where floor is the majority-answer rate of the test split (what a model that learned nothing useful
from the images scores). 1 means the protected data taught nothing; 0 means it taught as much as the
clean data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mmguard_core.data.sample import Dataset
from mmguard_core.engine.grouping import normalise_answer
from mmguard_core.engine.triggers import base_prompt


@dataclass
class VictimRecipe:
    """How the simulated attacker fine-tunes."""

    epochs: float = 3.0
    lr: float = 1e-3
    batch_size: int = 16
    recipe: str = "full"  # full | lora
    freeze_vision: bool = False


def majority_rate(answers: list[str]) -> float:
    counts = Counter(normalise_answer(a) for a in answers)
    return max(counts.values()) / len(answers) if answers else 0.0


def protection_score(acc_protected: float, acc_clean: float, floor: float) -> float | None:
    """Capped at 1: a protected-trained victim scoring below the floor is no more than fully protected
    (the uncapped value is kept in each run as `protection_raw`)."""
    raw = raw_protection(acc_protected, acc_clean, floor)
    return None if raw is None else min(1.0, raw)


def raw_protection(acc_protected: float, acc_clean: float, floor: float) -> float | None:
    if acc_clean - floor <= 1e-9:
        return None  # the victim did not learn the task from clean data either: no verdict
    return 1.0 - (acc_protected - floor) / (acc_clean - floor)


def load_victim(spec: str, zoo_size: str, device: str = "cpu"):
    prefix, rest = spec.split(":", 1)
    if prefix == "zoo":
        from mmguard_core.models.zoo import load_zoo_model

        family, _, seed = rest.partition("@")  # zoo:llava@1 = the llava zoo model pretrained with seed 1
        return load_zoo_model(family, size=zoo_size, seed=int(seed or 0), device=device)
    from mmguard_core.models.registry import load_surrogate

    return load_surrogate(spec, device=device)


def tensors_and_prompts(dataset: Dataset):
    from mmguard_core.pipeline import read_shard_input

    data, _ = read_shard_input(dataset)
    prompts = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    return data.images, prompts


def finetune_and_score(victim_spec: str, train: Dataset, test_images, test_prompts, recipe: VictimRecipe,
                       seed: int, zoo_size: str) -> float:
    from mmguard_core.models.training import evaluate_exact, finetune

    torch.manual_seed(seed)
    adapter = load_victim(victim_spec, zoo_size)
    images, prompts = tensors_and_prompts(train)
    finetune(adapter, images, prompts, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size,
             recipe=recipe.recipe, freeze_vision=recipe.freeze_vision, seed=seed)
    return evaluate_exact(adapter, test_images, test_prompts, batch_size=64)


def evaluate_protection(clean_train: Dataset, protected_train: Dataset, test: Dataset, victim: str,
                        recipe: VictimRecipe | None = None, seeds: tuple[int, ...] = (0,),
                        zoo_size: str = "small") -> dict[str, Any]:
    """Fine-tune `victim` on both train splits per seed; report accuracies and protection."""
    from mmguard_core.models.training import evaluate_exact

    recipe = recipe or VictimRecipe()
    started = time.perf_counter()
    test_images, test_prompts = tensors_and_prompts(test)
    floor = majority_rate([s.answer for s in test.samples])
    before = evaluate_exact(load_victim(victim, zoo_size), test_images, test_prompts, batch_size=64)
    runs = []
    for seed in seeds:
        acc_clean = finetune_and_score(victim, clean_train, test_images, test_prompts, recipe, seed, zoo_size)
        acc_prot = finetune_and_score(victim, protected_train, test_images, test_prompts, recipe, seed, zoo_size)
        runs.append({"seed": seed, "acc_clean": acc_clean, "acc_protected": acc_prot,
                     "protection": protection_score(acc_prot, acc_clean, floor),
                     "protection_raw": raw_protection(acc_prot, acc_clean, floor)})
    scores = [r["protection"] for r in runs if r["protection"] is not None]
    return {
        "victim": victim,
        "recipe": asdict(recipe),
        "zoo_size": zoo_size,
        "floor": floor,
        "acc_before_finetune": before,
        "runs": runs,
        "protection_mean": statistics.fmean(scores) if scores else None,
        "protection_std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
        "seconds": time.perf_counter() - started,
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mmguard_core.data import load_dataset
    from mmguard_core.data.errors import DatasetError

    torch.set_num_threads(args.threads)
    recipe = VictimRecipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, recipe=args.recipe,
                          freeze_vision=args.freeze_vision)
    with tempfile.TemporaryDirectory(prefix="mmguard-eval-") as scratch:
        try:
            clean = load_dataset(args.clean_train, work_dir=scratch)
            protected = load_dataset(args.protected_train, work_dir=scratch)
            test = load_dataset(args.test, work_dir=scratch)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        result = evaluate_protection(clean, protected, test, args.victim, recipe, tuple(args.seed or [0]),
                                     args.zoo_size)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    mean = result["protection_mean"]
    print(f"victim {result['victim']} ({recipe.recipe}, {recipe.epochs} epochs, lr {recipe.lr}); "
          f"floor {result['floor']:.3f}, before fine-tuning {result['acc_before_finetune']:.3f}")
    for run in result["runs"]:
        p = run["protection"]
        print(f"  seed {run['seed']}: clean-trained {run['acc_clean']:.3f}, protected-trained "
              f"{run['acc_protected']:.3f}, protection {'n/a' if p is None else f'{p:.3f}'}")
    spread = result["protection_std"]
    print(f"protection {'n/a' if mean is None else f'{mean:.3f} ± {spread:.3f}'}")
    return 0
