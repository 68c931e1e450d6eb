"""One call from an input dataset to a protected copy and its report.

    report = run_protection("in.zip", "out.zip", preset("fast"))

This is what the CLI and the service's worker call. It reads the dataset through the data layer,
loads the surrogate ensemble, runs the two engine stages and writes the output in the input's own
layout. Sharded jobs call the two stages themselves (`learn_shared` once, `protect_shard` per shard).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmguard_core import __version__, metrics
from mmguard_core.config import ProtectionConfig
from mmguard_core.data import load_dataset, merge_alpha, read_image_uint8, write_protected
from mmguard_core.data.sample import Dataset, ProtectedSample
from mmguard_core.engine.ensemble import load_ensemble, resolve_device
from mmguard_core.engine.protect import (
    ProtectionCancelled,
    ShardInput,
    ShardOutput,
    SharedState,
    learn_shared,
    protect_shard,
)

__all__ = ["ProtectionCancelled", "run_protection", "protect_loaded", "read_shard_input"]

Progress = Callable[[int, int, str], None]

JPEG_WARNING = (
    "Protected images are saved losslessly (PNG). Re-encoding them as JPEG or resizing them before "
    "publishing weakens the protection; publish the files as they are."
)
FALLBACK_WARNING = (
    "All samples share one answer group, so the image noise could not be aimed at another answer "
    "(sample_objective targeted); it is error-minimising instead, which protected less on our benchmark."
)


def read_shard_input(dataset: Dataset, indices: list[int] | None = None) -> tuple[ShardInput, list[np.ndarray | None]]:
    """Images as (3, H, W) tensors in [0, 1] (exactly uint8 / 255) plus each image's alpha, if any."""
    indices = list(range(len(dataset.samples))) if indices is None else indices
    images, alphas, questions, answers = [], [], [], []
    for index in indices:
        sample = dataset.samples[index]
        rgb, alpha = read_image_uint8(dataset.image_file(index))
        images.append(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255)
        alphas.append(alpha)
        questions.append(sample.question)
        answers.append(sample.answer)
    return ShardInput(images, questions, answers, indices), alphas


def run_protection(
    input_path: str | Path,
    output_path: str | Path,
    config: ProtectionConfig,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    work_dir: str | Path | None = None,
    skip_bad: bool = False,
    format: str | None = None,
    fields: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Protect the dataset at `input_path` (folder, .zip or .tar) into `output_path`; return the report.

    Raises DatasetError / ConfigError for bad input and ProtectionCancelled when should_stop() turns
    True (nothing is written then)."""
    config.validate()
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="mmguard-") as scratch:
        if progress:
            progress(0, 1, "reading dataset")
        with load_dataset(input_path, work_dir=scratch, skip_bad=skip_bad, format=format, fields=fields) as dataset:
            report = protect_loaded(dataset, output_path, config, progress=progress, should_stop=should_stop)
            report["dataset"]["warnings"] = [w.to_dict() for w in dataset.warnings]
            report["dataset"]["skipped"] = [p.to_dict() for p in dataset.problems]
    report["input"] = str(input_path)
    report["output"] = str(output_path)
    return report


def protect_loaded(
    dataset: Dataset,
    output_path: str | Path,
    config: ProtectionConfig,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    if config.verify:
        from mmguard_core.verify import check_victim

        check_victim(config)
    timings: dict[str, float] = {}
    data, alphas = read_shard_input(dataset)
    timings["read"] = time.perf_counter() - started

    if progress:
        progress(0, 1, "loading surrogates")
    t0 = time.perf_counter()
    surrogates = load_ensemble(config)
    timings["load_surrogates"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    shared = learn_shared(data, surrogates, config, progress=progress, should_stop=should_stop)
    timings["shared_stage"] = time.perf_counter() - t0
    shard = protect_shard(data, shared, surrogates, config, progress=progress, should_stop=should_stop)
    timings["sample_stage"] = shard.seconds
    timings["clean_task_surrogates"] = shard.clean_task_seconds  # part of sample_stage

    surrogate_seconds = shared.forward_seconds + shard.forward_seconds
    timings["surrogate_pass_seconds"] = surrogate_seconds
    engine_seconds = timings["shared_stage"] + timings["sample_stage"]
    timings["surrogate_pass_share"] = surrogate_seconds / engine_seconds if engine_seconds else 0.0
    surrogate_names = [s.name for s in surrogates]
    del surrogates  # the verification victims need the memory more
    # verified before writing, so that a cancel during the check still leaves nothing behind
    verification = verify_job(data, shard, config, progress, should_stop)
    timings["verification"] = verification.get("seconds", 0.0) if verification else 0.0

    if should_stop is not None and should_stop():
        raise ProtectionCancelled("cancelled")
    if progress:
        progress(0, 1, "writing")
    t0 = time.perf_counter()
    protected = to_protected_samples(data, shard, alphas)
    write_protected(dataset, protected, output_path)
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    if progress:
        progress(1, 1, "done")
    report = build_report(dataset, data, shard, shared, config, surrogate_names, timings)
    report["verification"] = verification
    return report


def verify_job(data: ShardInput, shard: ShardOutput, config: ProtectionConfig, progress: Progress | None,
               should_stop: Callable[[], bool] | None) -> dict[str, Any] | None:
    """The report's `verification` section, or None when the config turns it off."""
    if not config.verify:
        return None
    from mmguard_core.verify import VerificationCancelled, verify_protection

    try:
        return verify_protection(data.images, data.questions, data.answers, shard.images, shard.prompts_question,
                                 config, protected_answers=shard.answers, progress=progress, should_stop=should_stop)
    except VerificationCancelled as exc:
        raise ProtectionCancelled("cancelled") from exc


def to_protected_samples(data: ShardInput, shard: ShardOutput, alphas: list) -> list[ProtectedSample]:
    out = []
    for k, index in enumerate(data.indices):
        image = merge_alpha(shard.images[k], alphas[k])  # alpha is kept exactly as it was
        out.append(ProtectedSample(index=index, image=image, question=shard.prompts_question[k],
                                   answer=shard.answers[k], trigger=shard.triggers[k]))
    return out


def image_quality(data: ShardInput, shard: ShardOutput) -> list[dict[str, float]]:
    rows = []
    for k in range(len(data.indices)):
        original = (data.images[k] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        rows.append({
            "linf": metrics.linf(original, shard.images[k]),
            "psnr": metrics.psnr(original, shard.images[k]),
            "ssim": metrics.ssim(original, shard.images[k]),
        })
    return rows


def sample_noise_summary(objective: str, config: ProtectionConfig, shared: SharedState) -> dict[str, Any]:
    """What the per-sample noise did; a targeted one also says where it aimed each group."""
    if objective != "targeted" or shared.grouping is None:
        return {"objective": objective, "target_steps": 0}
    return {"objective": objective, "target_steps": config.target_steps, "target_choice": config.target_choice,
            "target_loss": config.target_loss, "target_feature_weight": config.target_feature_weight,
            "ensemble_gradient": config.ensemble_gradient, "targets": shared.grouping.target_keys()}


def build_report(dataset: Dataset, data: ShardInput, shard: ShardOutput, shared: SharedState,
                 config: ProtectionConfig, surrogate_names: list[str], timings: dict[str, float]) -> dict[str, Any]:
    quality = image_quality(data, shard)
    finite_psnr = [q["psnr"] for q in quality if np.isfinite(q["psnr"])]
    groups = None
    if shared.grouping is not None:
        groups = {
            "structure": shared.grouping.structure,
            "count": len(shared.grouping.keys),
            "shared_noise": shared.patterns is not None and config.method != "classwise",
            "triggers": {key: " ".join(words) for key, words in zip(shared.grouping.keys, shared.triggers, strict=False)},
        }
    per_image = [{"index": i, "file": dataset.samples[i].image_path, **q} for i, q in zip(data.indices, quality, strict=True)]
    return {
        "mmguard_version": __version__,
        "method": config.method,
        "config": config.to_dict(),
        "surrogates": surrogate_names,
        "device": resolve_device(config.device),  # what config.device "auto" turned out to be
        "dataset": {"samples": len(dataset.samples), "kind": dataset.kind, "layout": dataset.layout},
        "trigger": {
            "placement": config.trigger_placement if config.trigger_length else "off",
            "position": config.trigger_position,
            "vocabulary": config.trigger_vocabulary,
            "length": config.trigger_length,
            "samples_with_trigger": sum(1 for t in shard.triggers if t),
            # trigger_trials > 1: each raced assignment's clean loss after the simulated attack (0 = searched)
            "race": ({"clean_loss": shared.trigger_race,
                      "pick": max(range(len(shared.trigger_race)), key=shared.trigger_race.__getitem__)}
                     if shared.trigger_race else None),
        },
        "groups": groups,
        # what the per-sample noise did (a targeted config on a single group falls back to minimize)
        "sample_noise": sample_noise_summary(shard.sample_objective, config, shared),
        "summary": {
            "epsilon": config.epsilon,
            "linf_max": max((q["linf"] for q in quality), default=0.0),
            "psnr_mean": float(np.mean(finite_psnr)) if finite_psnr else float("inf"),
            "psnr_min": float(np.min(finite_psnr)) if finite_psnr else float("inf"),
            "ssim_mean": float(np.mean([q["ssim"] for q in quality])) if quality else 1.0,
        },
        "images": per_image,
        "timings": timings,
        "loss_curve": {"shared": shared.loss_curve, "sample": shard.loss_curve},
        "warnings": [JPEG_WARNING, *([FALLBACK_WARNING] if config.method == "mmguard" and config.sample_objective
                                      == "targeted" and shard.sample_objective == "minimize" else [])],
    }
