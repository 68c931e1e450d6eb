"""Benchmark data: tasks the zoo victims have NOT learned in pretraining.

The zoo is pretrained on the synthetic colour/shape/count/position/texture questions, so a victim
already answers "what color is the shape?" before any fine-tuning; protecting that data could not
show anything. The benchmark therefore asks the colour question with new answer words (a code word
per colour: red -> apple, ...): the visual feature is one the victim can already see (easy to
learn from clean data) but the mapping must be learned from the released data. `contrast` 1.0 gives
the easy, saturated-colour task; 0.3 a subtler one; `color@C` any contrast C in (0, 1] (at 0.1 two
colours differ by 9-23 of 255 levels in their most different channel, the size of an 8/255 perturbation:
where the image noise can compete with the true feature at all).
"""

from __future__ import annotations

from pathlib import Path

from mmguard_core import synth

CODEWORDS = {"red": "apple", "green": "house", "blue": "river", "yellow": "window", "purple": "tree",
             "orange": "book"}
TASKS = {"easy": 1.0, "subtle": 0.3}
TRAIN_SEED, TEST_SEED = 101, 202  # benchmark seeds (< 10_000; the zoo pretrains on 10_000+)


def codeword_samples(n: int, seed: int, contrast: float, image_size: int = 32) -> list[synth.SynthSample]:
    samples = synth.generate("color", n, seed, image_size=image_size, contrast=contrast)
    for sample in samples:
        sample.answer = CODEWORDS[sample.answer]
    return samples


def task_contrast(task: str) -> float:
    """`easy`, `subtle` or `color@C` -> the colour contrast it renders at."""
    if task in TASKS:
        return TASKS[task]
    name, _, value = task.partition("@")
    try:
        contrast = float(value)
    except ValueError:
        contrast = -1.0
    if name != "color" or not 0 < contrast <= 1:
        raise ValueError(f"task: {task!r}; choose {', '.join(TASKS)} or color@C with C in (0, 1]")
    return contrast


def write_task(folder: Path, task: str, n_train: int, n_test: int) -> tuple[Path, Path]:
    contrast = task_contrast(task)
    train, test = folder / f"{task}-train", folder / f"{task}-test"
    if not (train / "data.jsonl").exists():
        synth.write_dataset(train, codeword_samples(n_train, TRAIN_SEED, contrast))
    if not (test / "data.jsonl").exists():
        synth.write_dataset(test, codeword_samples(n_test, TEST_SEED, contrast))
    return train, test


def output_file(out: Path, suffix: str) -> Path:
    """OUT + suffix, not OUT.with_suffix(): a run named small-color@0.2-1 has no suffix to replace."""
    return out.parent / f"{out.name}{suffix}"
