"""The offline tiny model zoo: small LVLMs of real transformers families, pretrained on synthetic data.

No checkpoint can be downloaded here, yet the engine needs surrogate LVLMs that actually answer
questions about images (a randomly initialised model gives meaningless gradients). The zoo builds
them: `build_tiny(family, zoo_tokenizer(), size, seed)` from `mmguard_core.models.tiny`, then a
short pretraining with `training.finetune` on a mixed synthetic corpus (`mmguard_core.synth`:
colour / shape / count / position / texture questions plus captions, contrast drawn in [0.3, 1],
images of 32, 48 and 40x32 px), then a clean evaluation whose figures are stored next to
the weights in ``zoo_manifest.json``.

Cache layout: ``<cache>/<size>-seed<seed>/<family>/`` (``adapter.save_pretrained`` files plus the
manifest), ``<cache>`` = the ``cache_dir`` argument, else env ``MMGUARD_CACHE_DIR`` when set, else
``~/.cache/mmguard/zoo``. Each family folder is written into a temporary folder beside it and renamed into place, under a per-family file lock, so
two processes building at once never see a half-written model and never both train it. A folder
whose manifest does not match the current recipe (zoo version, pretraining plan, tokenizer
vocabulary) is stale and rebuilt.

Seeds: the zoo pretrains on synthetic data seeds ``10_000 + 100 * seed + 25 * stage + k`` (k < 25)
and evaluates on ``10_000 + 100 * seed + 80 + k``; benchmarks and tests use seeds below 10_000, so a
benchmark's train/test data never coincide with the zoo's pretraining data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard_core import synth
from mmguard_core.config import parse_zoo_spec  # torch-free, so the config check shares it
from mmguard_core.models.base import LVLMAdapter, Prompt
from mmguard_core.models.training import evaluate_exact, finetune

__all__ = [
    "Stage",
    "ZOO_FAMILIES",
    "DEFAULT_ENSEMBLE",
    "ZOO_VERSION",
    "PRETRAIN_SEED_BASE",
    "PLANS",
    "PretrainPlan",
    "MANIFEST",
    "default_cache_dir",
    "zoo_words",
    "zoo_tokenizer",
    "zoo_path",
    "build_zoo",
    "load_zoo_model",
    "parse_zoo_spec",
    "read_manifest",
    "pretraining_corpus",
    "images_to_tensors",
    "samples_to_prompts",
]

ZOO_VERSION = 1
# the families `mmguard zoo build` makes (each has a tiny config in mmguard_core.models.tiny)
# (any family of mmguard_core.models.tiny -- internvl, llava_next, qwen2_5_vl too -- builds on first use)
ZOO_FAMILIES: tuple[str, ...] = ("llava", "qwen2_vl", "idefics3", "paligemma", "gemma3")
# the default surrogate ensemble: paligemma and gemma3 stay out of it, so every job can be verified
# against a model the protection never saw (mmguard_core/verify.py) -- the benchmark's black-box setup
DEFAULT_ENSEMBLE: tuple[str, ...] = ("llava", "qwen2_vl", "idefics3")
PRETRAIN_SEED_BASE = 10_000
MANIFEST = "zoo_manifest.json"
COMMON_WORDS_FILE = Path(__file__).with_name("common_words.txt")
EVAL_TASKS: tuple[str, ...] = ("color", "shape", "count", "position", "texture", "caption")

ProgressFn = Callable[[str, float], None]


@dataclass(frozen=True)
class Stage:
    """One pretraining stage: `steps` optimizer steps on a corpus of `corpus` = ((task, samples), ...)."""

    corpus: tuple[tuple[str, int], ...]
    steps: int
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 20


@dataclass(frozen=True)
class PretrainPlan:
    """How one zoo model is pretrained (part of the cache fingerprint: change it and the zoo rebuilds).

    Stages run in order (a fresh AdamW each). Why a colour-only stage first: tiny models trained
    from scratch on the mixed corpus alone sit for hundreds of steps on the per-question answer
    prior before they read the image, and whether they ever do within budget varies by family
    (measured: Idefics3 and PaliGemma at chance on colour after 500 mixed steps). 200 colour-only
    steps first, then 300 mixed, gave colour 1.0 on all four default families (120 first left
    Qwen2-VL at 0.84). Shape / count / position / texture stay near chance at the "small" budget
    (each needs hundreds more steps). `image_sizes`: the sizes the corpus is drawn at, in equal
    shares (the adapters resize to their input size); `eval_n`: clean test samples per task for
    the report.

    `filler_rate`: the share of pretraining questions that get one to three words inserted at random
    places (`filler_words`: the everyday words of the shared trigger vocabulary and the rare trigger
    candidates) with the answer unchanged. Real LVLMs have read these words in every context and
    learned that they do not change what is asked; a zoo model that never saw them holds its random
    initial embeddings for them, and how fast it then learns a trigger made of them is an accident of
    its seed (measured: the trigger alone protected LLaVA pretraining seed 0 at 0.74, seed 1 at 0.07).
    Pretraining with fillers makes the benchmark victims meet the trigger words as a real model would."""

    stages: tuple[Stage, ...]
    batch_size: int = 32
    image_sizes: tuple[Any, ...] = (32,)
    contrast: tuple[float, float] = (0.3, 1.0)
    eval_n: int = 100
    filler_rate: float = 0.0

    @property
    def steps(self) -> int:
        return sum(stage.steps for stage in self.stages)


_MIXED_SMALL = (
    ("color", 1200),
    ("shape", 500),
    ("count", 500),
    ("position", 500),
    ("texture", 300),
    ("caption", 400),
)

PLANS: dict[str, PretrainPlan] = {
    # seconds on one thread: the tests build this size
    "test": PretrainPlan(
        stages=(Stage(corpus=(("color", 96), ("caption", 16)), steps=40, lr=3e-3, warmup_steps=4),),
        batch_size=16,
        image_sizes=(32,),
        eval_n=32,
    ),
    # colour first, then the mixed corpus with colour weighted up (the benchmark task). One thread,
    # idle core: about 50 s (llava, paligemma) to 100 s (qwen2_vl) a family, 4-5 min for the four
    # default families in a row, about half with build_zoo(workers=2) on 2 free cores.
    "small": PretrainPlan(
        stages=(
            Stage(corpus=(("color", 1000),), steps=200, schedule="constant"),
            Stage(corpus=_MIXED_SMALL, steps=300),
        ),
        batch_size=32,
        image_sizes=(32, 32, 48, (40, 32)),
        eval_n=100,
    ),
    # not measured yet (64 px models, a few M parameters)
    "base": PretrainPlan(
        stages=(
            Stage(corpus=(("color", 1000),), steps=250, schedule="constant"),
            Stage(corpus=_MIXED_SMALL, steps=550),
        ),
        batch_size=32,
        image_sizes=(64, 64, 48, (80, 64)),
        eval_n=100,
    ),
}
# the benchmark's second world: the "small" models pretrained on the same corpus with filler words in
# half the questions, so they have learned the trigger vocabulary as words that change nothing
PLANS["small-fillers"] = dataclasses.replace(PLANS["small"], filler_rate=0.5)

_STAGE_SEED_STRIDE = 25  # data seeds of stage i: base + 25 * i + k (k < 25); evaluation: base + 80 + k
_EVAL_SEED_OFFSET = 80


# --------------------------------------------------------------------------- tokenizer


def _common_words() -> list[str]:
    words: list[str] = []
    for line in COMMON_WORDS_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            words.append(line.lower())
    return words


def _trigger_words(name: str) -> list[str]:
    """A word list of engine/trigger_words.py (CANDIDATE_WORDS or SHARED_WORDS), lower-cased; empty
    when the engine is not importable."""
    try:
        from mmguard_core.engine import trigger_words
    except ImportError:
        return []
    return [str(w).lower() for w in getattr(trigger_words, name)]


def _candidate_words() -> list[str]:
    return _trigger_words("CANDIDATE_WORDS")


def _shared_words() -> list[str]:
    return _trigger_words("SHARED_WORDS")


def filler_words() -> list[str]:
    """Words the pretraining inserts into questions without changing the answer (PretrainPlan.filler_rate)."""
    return list(dict.fromkeys([*_shared_words(), *_candidate_words()]))


def with_fillers(prompts: Sequence[Prompt], rate: float, seed: int) -> list[Prompt]:
    """`rate` of the prompts get 1-3 filler words at random word positions of the question; the
    everyday words are drawn as often as all rare candidates together (real text is mostly those)."""
    if rate <= 0:
        return list(prompts)
    rng = np.random.default_rng(seed)
    everyday = _shared_words()
    common = set(everyday)
    rare = [w for w in filler_words() if w not in common]
    out = []
    for prompt in prompts:
        if prompt.question is None or rng.random() >= rate:
            out.append(prompt)
            continue
        words = prompt.question.split()
        for _ in range(int(rng.integers(1, 4))):
            pool = everyday if (not rare or rng.random() < 0.5) else rare
            words.insert(int(rng.integers(0, len(words) + 1)), pool[int(rng.integers(0, len(pool)))])
        out.append(Prompt(question=" ".join(words), answer=prompt.answer))
    return out


def zoo_words() -> list[str]:
    """The zoo vocabulary's words in a fixed order, without duplicates: every word the synthetic
    generator emits, the common English words (common_words.txt), then the trigger candidates."""
    seen: dict[str, None] = {}
    for word in [*synth.vocabulary(), *_common_words(), *_candidate_words()]:
        seen.setdefault(word, None)
    return list(seen)


def zoo_tokenizer():
    """The word-level tokenizer every zoo model shares (a fresh object on each call)."""
    from mmguard_core.models.tokenizer import build_word_tokenizer

    return build_word_tokenizer(zoo_words())


# --------------------------------------------------------------------------- data


def images_to_tensors(images: Sequence[Any]) -> list[torch.Tensor]:
    """PIL images -> (3, H, W) float tensors in [0, 1]."""
    out = []
    for image in images:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(array).permute(2, 0, 1).contiguous())
    return out


def samples_to_prompts(samples: Sequence[synth.SynthSample], seed: int = 0) -> list[Prompt]:
    """VQA samples keep their question; captions get one of synth.CAPTION_INSTRUCTIONS (seeded)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for sample in samples:
        if sample.question is None:
            question = synth.CAPTION_INSTRUCTIONS[int(rng.integers(0, len(synth.CAPTION_INSTRUCTIONS)))]
        else:
            question = sample.question
        prompts.append(Prompt(question=question, answer=sample.answer))
    return prompts


def pretraining_corpus(
    plan: PretrainPlan, seed: int, stage: int = 0
) -> tuple[list[torch.Tensor], list[Prompt]]:
    """The synthetic corpus of one stage of a plan (data seeds 10_000 + 100 * seed + 25 * stage + k)."""
    base = PRETRAIN_SEED_BASE + 100 * int(seed) + _STAGE_SEED_STRIDE * stage
    samples: list[synth.SynthSample] = []
    k = 0
    for task, count in plan.stages[stage].corpus:
        sizes = plan.image_sizes
        shares = [count // len(sizes) + (1 if i < count % len(sizes) else 0) for i in range(len(sizes))]
        for size, share in zip(sizes, shares, strict=True):
            size_arg = tuple(size) if isinstance(size, list | tuple) else int(size)
            samples.extend(synth.generate(task, share, base + k, image_size=size_arg, contrast=plan.contrast))
            k += 1
    if k > _STAGE_SEED_STRIDE:
        raise ValueError("zoo plan: too many (task, size) parts in one stage for its seed range")
    prompts = with_fillers(samples_to_prompts(samples, seed=base), plan.filler_rate, seed=base + 1)
    return images_to_tensors([s.image for s in samples]), prompts


def _evaluate(adapter: LVLMAdapter, plan: PretrainPlan, seed: int) -> dict[str, float]:
    """Clean exact-match accuracy per task (32 px, contrast 1.0) plus colour at contrast 0.3."""
    base = PRETRAIN_SEED_BASE + 100 * int(seed) + _EVAL_SEED_OFFSET

    def score(samples: list[synth.SynthSample], prompt_seed: int) -> float:
        images = images_to_tensors([s.image for s in samples])
        return round(
            evaluate_exact(adapter, images, samples_to_prompts(samples, prompt_seed), batch_size=50), 4
        )

    scores: dict[str, float] = {}
    for k, task in enumerate(EVAL_TASKS):
        scores[task] = score(
            synth.generate(task, plan.eval_n, base + k, image_size=32, contrast=1.0), base + k
        )
    low = len(EVAL_TASKS)
    scores["color@0.3"] = score(
        synth.generate("color", plan.eval_n, base + low, image_size=32, contrast=0.3), base + low
    )
    return scores


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """env MMGUARD_CACHE_DIR when set, else ~/.cache/mmguard/zoo."""
    env = os.environ.get("MMGUARD_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmguard" / "zoo"


def zoo_path(
    family: str, size: str = "small", seed: int = 0, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where a zoo model lives (whether or not it is built yet)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{size}-seed{int(seed)}" / family


def _fingerprint(family: str, size: str, seed: int, plan: PretrainPlan, words: list[str]) -> str:
    payload = json.dumps(
        {
            "zoo_version": ZOO_VERSION,
            "synth_version": synth.SYNTH_VERSION,
            "family": family,
            "size": size,
            "seed": int(seed),
            "plan": asdict(plan),
            "words": words,
        },
        sort_keys=True,
        default=list,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The zoo manifest of a model folder (None when absent or unreadable)."""
    try:
        return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_current(path: Path, fingerprint: str) -> bool:
    manifest = read_manifest(path)
    return manifest is not None and manifest.get("fingerprint") == fingerprint


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: the atomic rename alone keeps it safe
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _check_family(family: str) -> None:
    from mmguard_core.models.registry import FAMILIES
    from mmguard_core.models.tiny import BUILDERS

    if family not in FAMILIES or family not in BUILDERS:
        known = sorted(set(FAMILIES) & set(BUILDERS))
        raise ValueError(f"zoo: unknown family {family!r}; known: {', '.join(known)}")


def _build_one(
    family: str,
    size: str,
    seed: int,
    plan: PretrainPlan,
    target: Path,
    fingerprint: str,
    words: list[str],
    progress: Callable[[float], None] | None,
) -> None:
    from mmguard_core.models.tiny import build_tiny
    from mmguard_core.models.tokenizer import build_word_tokenizer

    started = time.perf_counter()
    tokenizer = build_word_tokenizer(words)
    adapter = build_tiny(family, tokenizer, size=size, seed=seed)
    history: list[float] = []
    done = 0
    for index, stage in enumerate(plan.stages):
        images, prompts = pretraining_corpus(plan, seed, stage=index)

        def report(step: int, _total: int, _loss: float, _done: int = done) -> None:
            if progress is not None:
                progress(0.9 * (_done + step) / max(1, plan.steps))

        history += finetune(
            adapter,
            images,
            prompts,
            steps=stage.steps,
            lr=stage.lr,
            batch_size=plan.batch_size,
            seed=seed + index,
            schedule=stage.schedule,
            warmup_steps=stage.warmup_steps,
            progress=report,
        )
        done += stage.steps
    train_seconds = time.perf_counter() - started
    accuracy = _evaluate(adapter, plan, seed)
    if progress:
        progress(0.97)
    tmp = target.parent / f".tmp-{family}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with _quiet_progress_bars():
            adapter.save_pretrained(tmp)
        tail = history[-20:] if history else [float("nan")]
        manifest = {
            "family": family,
            "size": size,
            "seed": int(seed),
            "zoo_version": ZOO_VERSION,
            "fingerprint": fingerprint,
            "plan": asdict(plan),
            "vocab_size": len(tokenizer),
            "parameters": int(sum(p.numel() for p in adapter.model.parameters())),
            "final_loss": float(sum(tail) / len(tail)),
            "train_seconds": round(train_seconds, 2),
            "build_seconds": round(time.perf_counter() - started, 2),
            "torch_threads": torch.get_num_threads(),
            "accuracy": accuracy,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=list) + "\n", encoding="utf-8")
        old = None
        if target.exists():  # a stale model: move it aside, then swap the new one in
            old = target.parent / f".old-{family}-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_zoo(
    cache_dir: str | os.PathLike[str] | None = None,
    size: str = "small",
    families: Sequence[str] | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    workers: int = 1,
) -> dict[str, Path]:
    """Make sure every zoo model of `families` (default ZOO_FAMILIES) exists for (size, seed) in the
    cache, pretraining the missing or stale ones; return {family: model folder}.

    `progress(message, fraction)` reports the overall fraction done in [0, 1]. Safe to call from
    several processes at once (per-family lock + atomic rename). `workers` > 1 pretrains that many
    families at once in spawned processes of one torch thread each (on 2 free cores, 2 workers
    nearly halve the build time); 1 builds in this process at its current thread count."""
    if size not in PLANS:
        raise ValueError(f"zoo: unknown size {size!r}; use one of {', '.join(PLANS)}")
    chosen = list(dict.fromkeys(families)) if families is not None else list(ZOO_FAMILIES)
    for family in chosen:
        _check_family(family)
    plan = PLANS[size]
    words = zoo_words()
    targets = {family: zoo_path(family, size, seed, cache_dir) for family in chosen}
    count = max(1, len(chosen))
    missing = [f for f in chosen if not _is_current(targets[f], _fingerprint(f, size, seed, plan, words))]
    if workers > 1 and len(missing) > 1:
        _build_parallel(missing, cache_dir, size, seed, workers, progress, count, len(chosen) - len(missing))
        return targets
    for index, family in enumerate(chosen):
        target = targets[family]
        if family in missing:
            fingerprint = _fingerprint(family, size, seed, plan, words)

            def report(fraction: float, _i: int = index, _f: str = family) -> None:
                if progress is not None:
                    progress(f"zoo {size}-seed{seed}: pretraining {_f}", (_i + fraction) / count)

            with _file_lock(target.parent / f".{family}.lock"):
                if not _is_current(target, fingerprint):  # another process may have built it meanwhile
                    report(0.0)
                    _build_one(family, size, seed, plan, target, fingerprint, words, report)
        if progress is not None:
            progress(f"zoo {size}-seed{seed}: {family} ready", (index + 1) / count)
    return targets


def _build_parallel(
    families: list[str],
    cache_dir: str | os.PathLike[str] | None,
    size: str,
    seed: int,
    workers: int,
    progress: ProgressFn | None,
    count: int,
    done: int,
) -> None:
    """Build `families` in `workers` child processes (`python -m mmguard_core.models.zoo`, one torch
    thread each; no multiprocessing, so callers need no __main__ guard)."""
    import subprocess
    import sys
    import tempfile

    folder = str(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir())
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    queue = list(families)
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    failures: list[str] = []
    if progress is not None:
        progress(f"zoo {size}-seed{seed}: pretraining {', '.join(families)}", done / count)
    try:
        while queue or running:
            while queue and len(running) < max(1, workers):
                family = queue.pop(0)
                log = tempfile.TemporaryFile()
                cmd = [sys.executable, "-m", "mmguard_core.models.zoo", "--cache-dir", folder]
                cmd += ["--size", size, "--seed", str(seed), family]
                running[family] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
            time.sleep(0.2)
            for family, (proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[family]
                if proc.returncode != 0:
                    log.seek(0)
                    tail = log.read().decode("utf-8", "replace")[-2000:]
                    failures.append(f"{family} (exit {proc.returncode}): {tail}")
                log.close()
                done += 1
                if progress is not None:
                    progress(f"zoo {size}-seed{seed}: {family} ready", done / count)
    finally:
        for proc, log in running.values():
            proc.kill()
            proc.wait()
            log.close()
    if failures:
        raise RuntimeError("zoo: building failed for " + "; ".join(failures))


def load_zoo_model(
    family: str,
    size: str = "small",
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> LVLMAdapter:
    """A pretrained zoo model (built first when missing or stale), in eval mode."""
    from mmguard_core.models.registry import FAMILIES

    path = build_zoo(cache_dir=cache_dir, size=size, families=[family], seed=seed)[family]
    adapter = FAMILIES[family].from_pretrained(path, device=device, dtype=dtype)
    adapter.model.eval()
    return adapter


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmguard_core.models.zoo [--size small] [--seed 0] [--cache-dir D] [--workers N] [family ...]``
    builds the zoo and prints each model's folder and clean accuracy."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mmguard_core.models.zoo", description=_main.__doc__)
    parser.add_argument("families", nargs="*", help=f"default: {' '.join(ZOO_FAMILIES)}")
    parser.add_argument("--size", default="small", choices=sorted(PLANS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = build_zoo(
        cache_dir=args.cache_dir,
        size=args.size,
        families=args.families or None,
        seed=args.seed,
        workers=args.workers,
    )
    for family, path in paths.items():
        manifest = read_manifest(path) or {}
        print(family, path, json.dumps(manifest.get("accuracy", {})), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
