"""The judge: does a victim fine-tuned on the protected copy still learn the task?

A fresh copy of a victim model is fine-tuned on the clean train split and another on the protected
train split with the same recipe; both are scored on the clean test split (clean images, no trigger)
by exact match, and

    protection = 1 - (acc_protected - floor) / (acc_clean - floor)

where floor is the majority-answer rate of the test split (what a model that learned nothing useful
from the images scores). 1 means the protected data taught nothing; 0 means it taught as much as the
clean data.

The evaluation matrix (issue 5) extends this along three axes, all through `evaluate_protection`:

- **countermeasures** (`COUNTERMEASURES`), applied by the attacker to the protected train split
  before fine-tuning: JPEG q90/75/50, downscale ½ and back, Gaussian blur, Gaussian noise,
  grayscale + JPEG (ISS), random-crop/flip augmentation during training (finetune's `augment=`
  hook), and trigger stripping (rare words / words outside a normal vocabulary, removed from the
  questions without knowing our trigger list). The reference stays the victim fine-tuned on the
  *clean* data without countermeasure (what the attacker could have had); with
  `countermeasure_reference=True` the clean data also gets the countermeasure and a second figure,
  `protection_vs_cm_clean`, isolates what the countermeasure does to the protection itself.
- **mixing** (`protect_fraction`): the attacker trains on a mix in which only that share of the
  samples is protected and the rest is clean (same samples, aligned by index).
- **victims** (`mmguard_core.victims.make_victim`): LVLM adapters (zoo or checkpoint specs) and the
  project's non-transformer VQA model (``cnn``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmguard_core.data.sample import Dataset
from mmguard_core.engine.grouping import normalise_answer
from mmguard_core.engine.triggers import base_prompt
from mmguard_core.models.base import Prompt


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


def mean_spread(values: Sequence[float | None]) -> tuple[float | None, float, int]:
    """(mean, population std, n) over the values that are not None."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return None, 0.0, 0
    return statistics.fmean(kept), (statistics.pstdev(kept) if len(kept) > 1 else 0.0), len(kept)


# --------------------------------------------------------------------------- image countermeasures
# All take and return lists of (3, H, W) float tensors in [0, 1]; sizes are kept.


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float() / 255


def jpeg(images: Sequence[torch.Tensor], quality: int, gray: bool = False) -> list[torch.Tensor]:
    """Real JPEG encode/decode with Pillow at `quality` (4:2:0 chroma subsampling, Pillow's default);
    `gray`: encode a single luma channel (the result has three equal channels)."""
    from PIL import Image

    out = []
    for image in images:
        pil = Image.fromarray(to_uint8(image))
        if gray:
            pil = pil.convert("L")
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        decoded = Image.open(buffer)
        decoded.load()
        out.append(from_uint8(np.asarray(decoded)))
    return out


def downscale(images: Sequence[torch.Tensor], factor: float = 0.5) -> list[torch.Tensor]:
    """Resize by `factor` (bilinear, antialiased) and back to the original size."""
    out = []
    for image in images:
        h, w = image.shape[-2:]
        small = F.interpolate(image.float()[None], size=(max(1, round(h * factor)), max(1, round(w * factor))),
                              mode="bilinear", align_corners=False, antialias=True)
        out.append(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1))
    return out


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(images: Sequence[torch.Tensor], sigma: float = 1.0) -> list[torch.Tensor]:
    """Separable Gaussian blur (kernel radius ceil(3σ), reflect padding)."""
    kernel = gaussian_kernel(sigma)
    r = (kernel.numel() - 1) // 2
    out = []
    for image in images:
        x = image.float()[None]
        mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
        x = F.pad(x, (r, r, r, r), mode=mode)
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
        out.append(x[0].clamp(0, 1))
    return out


def gaussian_noise(images: Sequence[torch.Tensor], sigma: float = 8 / 255, seed: int = 0) -> list[torch.Tensor]:
    """Additive i.i.d. Gaussian noise of std `sigma`, clipped to [0, 1]; seeded."""
    generator = torch.Generator().manual_seed(int(seed))
    return [(img.float() + sigma * torch.randn(img.shape, generator=generator)).clamp(0, 1) for img in images]


def grayscale(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """ITU-R BT.601 luma replicated over the three channels."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return [(img.float() * weights).sum(0, keepdim=True).repeat(3, 1, 1) for img in images]


def iss(images: Sequence[torch.Tensor], quality: int = 10) -> list[torch.Tensor]:
    """Image Shortcut Squeezing (Liu et al. 2023): grayscale, then JPEG at a low quality (q 10 is the
    paper's JPEG setting), encoded as one luma channel."""
    return jpeg(grayscale(images), quality, gray=True)


def random_crop_flip(images: list[torch.Tensor], generator: torch.Generator, min_scale: float = 0.8) -> list[torch.Tensor]:
    """Training-time augmentation (finetune's `augment=` hook): per image, a random crop of 80-100 %
    of each side resized back to the original size, and a horizontal flip with p = 0.5."""
    out = []
    for image in images:
        h, w = image.shape[-2:]
        scale = min_scale + (1 - min_scale) * float(torch.rand((), generator=generator))
        ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
        top = int(torch.randint(0, h - ch + 1, (), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (), generator=generator))
        crop = image[:, top:top + ch, left:left + cw]
        if (ch, cw) != (h, w):
            crop = F.interpolate(crop[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
        if float(torch.rand((), generator=generator)) < 0.5:
            crop = crop.flip(-1)
        out.append(crop.clamp(0, 1))
    return out


# --------------------------------------------------------------------------- text countermeasures

_WORD_RE = re.compile(r"[A-Za-z][A-Za-z']*")
NORMAL_VOCABULARY_FILE = Path(__file__).resolve().parent / "models" / "common_words.txt"


def question_vocabulary(questions: Sequence[str | None]) -> Counter:
    """Document frequency of each lower-cased word over the questions."""
    counts: Counter = Counter()
    for q in questions:
        if q:
            counts.update({w.lower() for w in _WORD_RE.findall(q)})
    return counts


def tidy_spacing(text: str) -> str:
    """One space between words and none before punctuation, after words were cut out."""
    return re.sub(r"\s+([?.!,;:])", r"\1", re.sub(r"\s+", " ", text)).strip()


def remove_words(question: str, drop: set[str]) -> str:
    return tidy_spacing(_WORD_RE.sub(lambda m: "" if m.group().lower() in drop else m.group(), question))


def strip_rare_words(questions: Sequence[str | None], min_fraction: float = 0.25) -> list[str | None]:
    """The attacker's trigger removal without knowing the triggers: drop every word that appears in
    fewer than `min_fraction` of the questions (a templated question set keeps its template words;
    an inserted per-group trigger appears in only that group's share)."""
    counts = question_vocabulary(questions)
    n = sum(1 for q in questions if q)
    rare = {w for w, c in counts.items() if c < min_fraction * n}
    return [remove_words(q, rare) if q else q for q in questions]


def normal_vocabulary() -> set[str]:
    lines = NORMAL_VOCABULARY_FILE.read_text(encoding="utf-8").splitlines()
    return {line.strip().lower() for line in lines if line.strip() and not line.startswith("#")}


def strip_out_of_vocabulary(questions: Sequence[str | None], vocabulary: set[str] | None = None) -> list[str | None]:
    """Drop every word not in a normal-vocabulary list (by default the project's ~400 common English
    words of captions and VQA questions, which shares no word with the trigger list)."""
    vocab = normal_vocabulary() if vocabulary is None else {w.lower() for w in vocabulary}
    out = []
    for q in questions:
        if not q:
            out.append(q)
            continue
        out.append(remove_words(q, {w.lower() for w in _WORD_RE.findall(q)} - vocab))
    return out


def strip_repeated_words(questions: Sequence[str | None]) -> list[str | None]:
    """Keep the first occurrence of each word in a question and drop the repeats: an attacker who
    noticed the same words at both ends of every question (our default trigger placement) removes
    one copy without knowing the words; ordinary questions lose a repeated "the" at most."""
    out = []
    for q in questions:
        if not q:
            out.append(q)
            continue
        seen: set[str] = set()

        def once(match: re.Match, seen: set[str] = seen) -> str:
            word = match.group().lower()
            if word in seen:
                return ""
            seen.add(word)
            return match.group()

        out.append(tidy_spacing(_WORD_RE.sub(once, q)))
    return out


# --------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Countermeasure:
    name: str
    label: str
    images: Callable[[list[torch.Tensor], int], list[torch.Tensor]] | None = None  # (images, seed)
    questions: Callable[[list[str | None]], list[str | None]] | None = None
    augment: Callable | None = None  # finetune's augment hook


COUNTERMEASURES: dict[str, Countermeasure] = {c.name: c for c in (
    Countermeasure("none", "no countermeasure"),
    Countermeasure("jpeg90", "JPEG q90", images=lambda im, s: jpeg(im, 90)),
    Countermeasure("jpeg75", "JPEG q75", images=lambda im, s: jpeg(im, 75)),
    Countermeasure("jpeg50", "JPEG q50", images=lambda im, s: jpeg(im, 50)),
    Countermeasure("downscale", "downscale ½ and back", images=lambda im, s: downscale(im, 0.5)),
    Countermeasure("blur", "Gaussian blur σ=1", images=lambda im, s: gaussian_blur(im, 1.0)),
    Countermeasure("noise", "Gaussian noise σ=8/255", images=lambda im, s: gaussian_noise(im, 8 / 255, s)),
    Countermeasure("iss", "ISS: grayscale + JPEG q10", images=lambda im, s: iss(im, 10)),
    Countermeasure("augment", "random crop + flip (training)", augment=random_crop_flip),
    Countermeasure("strip_rare", "strip words in < 25 % of questions", questions=strip_rare_words),
    Countermeasure("strip_vocab", "strip words outside a common vocabulary", questions=strip_out_of_vocabulary),
    Countermeasure("strip_repeats", "strip words repeated within a question", questions=strip_repeated_words),
)}


def apply_countermeasure(name: str, images: list[torch.Tensor], questions: list[str | None],
                         seed: int = 0) -> tuple[list[torch.Tensor], list[str | None], Callable | None]:
    """(images, questions, augment hook) as the attacker trains on them."""
    if name not in COUNTERMEASURES:
        raise ValueError(f"countermeasure: unknown {name!r}; use one of {', '.join(COUNTERMEASURES)}")
    cm = COUNTERMEASURES[name]
    if cm.images is not None:
        images = cm.images(list(images), seed)
    if cm.questions is not None:
        questions = cm.questions(list(questions))
    return list(images), list(questions), cm.augment


# --------------------------------------------------------------------------- data

@dataclass
class Split:
    images: list[torch.Tensor]
    questions: list[str | None]
    answers: list[str]

    def prompts(self) -> list[Prompt]:
        return [base_prompt(q, a) for q, a in zip(self.questions, self.answers, strict=True)]


def read_split(dataset: Dataset) -> Split:
    from mmguard_core.pipeline import read_shard_input

    data, _ = read_shard_input(dataset)
    return Split(list(data.images), list(data.questions), list(data.answers))


def tensors_and_prompts(dataset: Dataset):
    split = read_split(dataset)
    return split.images, split.prompts()


def mix_splits(clean: Split, protected: Split, fraction: float, seed: int = 0) -> tuple[Split, list[int]]:
    """The attacker's training set when only `fraction` of it is protected: round(fraction * N)
    samples (a seeded choice) come from the protected copy, the rest from the clean one. Returns the
    mix and the sorted indices taken from the protected copy."""
    if len(clean.images) != len(protected.images):
        raise ValueError(f"mix: clean has {len(clean.images)} samples, protected {len(protected.images)}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("protect_fraction: must be in [0, 1]")
    n = len(clean.images)
    k = round(fraction * n)
    chosen = sorted(torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 104729))[:k].tolist())
    take = set(chosen)
    pick = [protected if i in take else clean for i in range(n)]
    return Split([pick[i].images[i] for i in range(n)], [pick[i].questions[i] for i in range(n)],
                 [pick[i].answers[i] for i in range(n)]), chosen


# --------------------------------------------------------------------------- victims


def load_victim(spec: str, zoo_size: str, device: str = "cpu"):
    """An LVLM adapter from a victim spec (``zoo:FAMILY[@SEED]`` or ``FAMILY:/checkpoint``)."""
    prefix, rest = spec.split(":", 1)
    if prefix == "zoo":
        from mmguard_core.models.zoo import load_zoo_model, parse_zoo_spec

        family, seed = parse_zoo_spec(rest)  # zoo:llava@1 = the llava zoo model pretrained with seed 1
        return load_zoo_model(family, size=zoo_size, seed=seed, device=device)
    from mmguard_core.models.registry import load_surrogate

    return load_surrogate(spec, device=device)


def train_and_score(victim_spec: str, train: Split, test: Split, recipe: VictimRecipe, seed: int,
                    zoo_size: str, augment: Callable | None = None, device: str = "cpu") -> float:
    """Fresh victim, fine-tuned on `train` with `recipe`, exact-match accuracy on `test`."""
    from mmguard_core.victims import make_victim

    torch.manual_seed(seed)
    victim = make_victim(victim_spec, zoo_size, device=device)
    victim.finetune(train.images, train.prompts(), epochs=recipe.epochs, lr=recipe.lr,
                    batch_size=recipe.batch_size, recipe=recipe.recipe, freeze_vision=recipe.freeze_vision,
                    seed=seed, augment=augment)
    return victim.accuracy(test.images, test.prompts())


def finetune_and_score(victim_spec: str, train: Dataset, test_images, test_prompts, recipe: VictimRecipe,
                       seed: int, zoo_size: str) -> float:
    """First-version entry point, kept: fine-tune on a Dataset, score on (images, prompts)."""
    test = Split(list(test_images), [p.question for p in test_prompts], [p.answer for p in test_prompts])
    return train_and_score(victim_spec, read_split(train), test, recipe, seed, zoo_size)


def _condition_key(countermeasure: str, fraction: float) -> str:
    return countermeasure if fraction >= 1.0 else f"{countermeasure}@{round(fraction * 100)}%"


def evaluate_protection(clean_train: Dataset, protected_train: Dataset, test: Dataset, victim: str,
                        recipe: VictimRecipe | None = None, seeds: tuple[int, ...] = (0,),
                        zoo_size: str = "small", *, countermeasures: Sequence[str] = ("none",),
                        protect_fractions: Sequence[float] = (1.0,), countermeasure_reference: bool = False,
                        progress: Callable[[str], None] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Fine-tune `victim` on both train splits per seed; report accuracies and protection.

    With several `countermeasures` / `protect_fractions`, the clean-trained reference is trained once
    per seed and every condition (countermeasure on the protected split, or a clean/protected mix)
    gets its own protected-trained run; `result["conditions"][key]` holds each condition's runs and
    mean ± spread (key = countermeasure name, or "none@50%" for a mix). The top-level `runs` /
    `protection_mean` are those of the first condition (the plain evaluation by default).
    `device`: cpu, cuda or auto -- where the victims are fine-tuned."""
    from mmguard_core.engine.ensemble import resolve_device

    recipe = recipe or VictimRecipe()
    device = resolve_device(device)
    for name in countermeasures:
        if name not in COUNTERMEASURES:
            raise ValueError(f"countermeasure: unknown {name!r}; use one of {', '.join(COUNTERMEASURES)}")
    started = time.perf_counter()
    test_split = read_split(test)
    clean = read_split(clean_train)
    protected = read_split(protected_train)
    floor = majority_rate(test_split.answers)
    from mmguard_core.victims import make_victim

    fresh = make_victim(victim, zoo_size, device=device)
    before = fresh.accuracy(test_split.images, test_split.prompts()) if fresh.pretrained else None
    del fresh
    say = progress or (lambda _msg: None)
    conditions: dict[str, dict[str, Any]] = {}
    plan = [(cm, 1.0) for cm in countermeasures] + [("none", f) for f in protect_fractions if f < 1.0]
    clean_acc: dict[int, float] = {}
    for seed in seeds:
        t0 = time.perf_counter()
        clean_acc[seed] = train_and_score(victim, clean, test_split, recipe, seed, zoo_size, device=device)
        say(f"{victim} seed {seed}: clean-trained {clean_acc[seed]:.3f} ({time.perf_counter() - t0:.0f} s)")
        for cm, fraction in plan:
            key = _condition_key(cm, fraction)
            t0 = time.perf_counter()
            train = protected if fraction >= 1.0 else mix_splits(clean, protected, fraction, seed)[0]
            images, questions, augment = apply_countermeasure(cm, train.images, train.questions, seed)
            acc_prot = train_and_score(victim, Split(images, questions, train.answers), test_split, recipe, seed,
                                       zoo_size, augment, device=device)
            run = {"seed": seed, "acc_clean": clean_acc[seed], "acc_protected": acc_prot,
                   "protection": protection_score(acc_prot, clean_acc[seed], floor),
                   "protection_raw": raw_protection(acc_prot, clean_acc[seed], floor)}
            if countermeasure_reference and cm != "none":
                c_images, c_questions, c_augment = apply_countermeasure(cm, clean.images, clean.questions, seed)
                acc_cm_clean = train_and_score(victim, Split(c_images, c_questions, clean.answers), test_split,
                                               recipe, seed, zoo_size, c_augment, device=device)
                run["acc_clean_countermeasure"] = acc_cm_clean
                run["protection_vs_cm_clean"] = protection_score(acc_prot, acc_cm_clean, floor)
            entry = conditions.setdefault(key, {"countermeasure": cm, "protect_fraction": fraction, "runs": []})
            entry["runs"].append(run)
            say(f"{victim} seed {seed} [{key}]: protected-trained {acc_prot:.3f}, protection "
                f"{'n/a' if run['protection'] is None else format(run['protection'], '.3f')} "
                f"({time.perf_counter() - t0:.0f} s)")
    for entry in conditions.values():
        mean, spread, n = mean_spread([r["protection"] for r in entry["runs"]])
        entry.update(protection_mean=mean, protection_std=spread, n_scored=n)
        if countermeasure_reference and entry["countermeasure"] != "none":
            m2, s2, _ = mean_spread([r.get("protection_vs_cm_clean") for r in entry["runs"]])
            entry.update(protection_vs_cm_clean_mean=m2, protection_vs_cm_clean_std=s2)
    first = conditions[_condition_key(*plan[0])]
    return {
        "victim": victim,
        "recipe": asdict(recipe),
        "zoo_size": zoo_size,
        "device": device,
        "floor": floor,
        "acc_before_finetune": before,
        "runs": first["runs"],
        "protection_mean": first["protection_mean"],
        "protection_std": first["protection_std"],
        "conditions": conditions,
        "seconds": time.perf_counter() - started,
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mmguard_core.config import ConfigError, check_model_spec
    from mmguard_core.data import load_dataset
    from mmguard_core.data.archive import check_result_file, write_result_file
    from mmguard_core.data.errors import DatasetError
    from mmguard_core.engine.ensemble import resolve_device
    from mmguard_core.victims import NON_TRANSFORMER_PREFIXES

    try:  # fine-tuning takes minutes to hours: refuse a victim or path it could not use first
        if args.victim.partition(":")[0] not in NON_TRANSFORMER_PREFIXES:
            check_model_spec("--victim", args.victim)
        if args.output:
            check_result_file(Path(args.output), "-o")
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        args.device = resolve_device(getattr(args, "device", "cpu"))
    except RuntimeError as exc:  # cuda asked for on a machine without one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    recipe = VictimRecipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, recipe=args.recipe,
                          freeze_vision=args.freeze_vision)
    countermeasures = getattr(args, "countermeasure", None) or ["none"]
    fractions = getattr(args, "protect_fraction", None) or [1.0]
    with tempfile.TemporaryDirectory(prefix="mmguard-eval-") as scratch:
        try:
            clean = load_dataset(args.clean_train, work_dir=scratch)
            protected = load_dataset(args.protected_train, work_dir=scratch)
            test = load_dataset(args.test, work_dir=scratch)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if any(f < 1.0 for f in fractions) and len(clean) != len(protected):
            print(f"error: --protect-fraction mixes the two train splits sample by sample, so they must be the "
                  f"same samples: clean has {len(clean)}, protected {len(protected)}", file=sys.stderr)
            return 2
        try:
            result = evaluate_protection(clean, protected, test, args.victim, recipe, tuple(args.seed or [0]),
                                         args.zoo_size, countermeasures=countermeasures,
                                         protect_fractions=fractions,
                                         countermeasure_reference=getattr(args, "countermeasure_reference", False),
                                         device=args.device)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    written = True
    if args.output:
        try:
            write_result_file(Path(args.output), json.dumps(result, indent=2))
        except OSError as exc:  # the figures are still printed below
            print(f"error: could not write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            written = False
    mean = result["protection_mean"]
    before = result["acc_before_finetune"]
    print(f"victim {result['victim']} ({recipe.recipe}, {recipe.epochs} epochs, lr {recipe.lr}); "
          f"floor {result['floor']:.3f}, before fine-tuning {'n/a' if before is None else f'{before:.3f}'}")
    for run in result["runs"]:
        p = run["protection"]
        print(f"  seed {run['seed']}: clean-trained {run['acc_clean']:.3f}, protected-trained "
              f"{run['acc_protected']:.3f}, protection {'n/a' if p is None else f'{p:.3f}'}")
    spread = result["protection_std"]
    print(f"protection {'n/a' if mean is None else f'{mean:.3f} ± {spread:.3f}'}")
    if len(result["conditions"]) > 1:
        for key, entry in result["conditions"].items():
            m, s = entry["protection_mean"], entry["protection_std"]
            print(f"  [{key}] protection {'n/a' if m is None else f'{m:.3f} ± {s:.3f}'}")
    return 0 if written else 1
