"""Learning curve: when, during an attacker's fine-tuning, a victim learns the planted shortcut and
when it learns the true feature.

    .venv/bin/python benchmarks/learning_curve.py --zoo-size small-fillers --victims zoo:llava,zoo:paligemma

Protects the benchmark train split once (benchmarks/common.py, --task), then fine-tunes each victim
on the protected split with the evaluation's recipe (3 epochs, lr 1e-3, batch 16) and, every
--every optimizer steps, measures on held-out samples:

- clean:     clean test image, clean question -- what protection is judged on;
- trigger:   clean test image, the question with its own answer's trigger -- has it learned the trigger;
- conflict:  clean test image, the question with ANOTHER answer's trigger -- the share of answers
             that follow the trigger rather than the image (who wins when the two disagree);
- noise:     protected train image, clean question, minus the same on the clean train image -- how
             much the image noise alone moves the answer (0: the victim does not read the noise).

Prints one line per measurement and writes OUT (JSON).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import write_json, write_task  # noqa: E402
from mmguard_core.config import preset  # noqa: E402
from mmguard_core.data import load_dataset  # noqa: E402
from mmguard_core.engine.grouping import normalise_answer  # noqa: E402
from mmguard_core.evaluate import VictimRecipe, load_victim, read_split  # noqa: E402
from mmguard_core.models.base import Prompt  # noqa: E402
from mmguard_core.models.training import evaluate_exact, finetune  # noqa: E402
from mmguard_core.pipeline import run_protection  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="easy")
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--ensemble", default="llava,qwen2_vl")
    parser.add_argument("--victims", default="zoo:llava,zoo:idefics3,zoo:paligemma")
    parser.add_argument("--protect-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="victim fine-tuning seed")
    parser.add_argument("--every", type=int, default=8, help="measure every this many optimizer steps")
    parser.add_argument("--zoo-size", default="small")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/learning_curve.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = VictimRecipe()
    results: dict = {"setup": vars(args) | {"out": str(args.out), "recipe": recipe.__dict__}, "curves": {}}
    with tempfile.TemporaryDirectory(prefix="mmguard-curve-") as scratch:
        scratch = Path(scratch)
        train_dir, test_dir = write_task(scratch, args.task, args.train, args.test)
        config = preset(args.preset, surrogates=[f"zoo:{f}" for f in args.ensemble.split(",")],
                        seed=args.protect_seed, verify=False, zoo_size=args.zoo_size)
        t0 = time.perf_counter()
        report = run_protection(train_dir, scratch / "protected", config)
        print(f"protected in {time.perf_counter() - t0:.0f} s; triggers {report['groups']['triggers']}", flush=True)
        protected = read_split(load_dataset(scratch / "protected", work_dir=scratch))
        clean = read_split(load_dataset(train_dir, work_dir=scratch))
        test = read_split(load_dataset(test_dir, work_dir=scratch))
        probes = build_probes(clean, protected, test)
        for victim_spec in args.victims.split(","):
            torch.manual_seed(args.seed)
            adapter = load_victim(victim_spec, args.zoo_size)
            curve: list[dict] = []

            def measure(step: int, total: int, loss: float, adapter=adapter, curve=curve, name=victim_spec) -> None:
                if step % args.every and step != total:
                    return
                was_training = adapter.model.training
                point = {"step": step, "of": total, "loss": round(float(loss), 4)} | run_probes(adapter, probes)
                adapter.model.train(was_training)
                curve.append(point)
                print(f"{name:14s} step {step:3d}/{total} loss {point['loss']:.3f}  clean {point['clean']:.2f}  "
                      f"trigger {point['trigger']:.2f}  conflict→trigger {point['conflict']:.2f}  "
                      f"noise {point['noise']:+.2f}", flush=True)

            finetune(adapter, protected.images, protected.prompts(), epochs=recipe.epochs, lr=recipe.lr,
                     batch_size=recipe.batch_size, seed=args.seed, progress=measure)
            results["curves"][victim_spec] = curve
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


def build_probes(clean, protected, test) -> dict:
    """The prompt sets each measurement scores (see the module docstring)."""
    trigger_question: dict[str, str] = {}
    for question, answer in zip(protected.questions, protected.answers, strict=True):
        trigger_question.setdefault(normalise_answer(answer), question)
    answers = sorted(trigger_question)
    test_keys = [normalise_answer(a) for a in test.answers]
    other = {a: answers[(answers.index(a) + 1) % len(answers)] for a in answers}  # a fixed other answer
    known = [i for i, key in enumerate(test_keys) if key in trigger_question]
    n = min(200, len(clean.images))
    plain = [Prompt(q, a) for q, a in zip(clean.questions[:n], clean.answers[:n], strict=True)]
    known_images = [test.images[i] for i in known]
    return {
        "clean": (list(test.images), test.prompts()),
        "trigger": (known_images, [Prompt(trigger_question[test_keys[i]], test.answers[i]) for i in known]),
        # scored as: does the answer follow the other answer's trigger?
        "conflict": (known_images,
                     [Prompt(trigger_question[other[test_keys[i]]], other[test_keys[i]]) for i in known]),
        "noise_on": (protected.images[:n], plain),
        "noise_off": (clean.images[:n], plain),
    }


def run_probes(adapter, probes: dict) -> dict:
    score = {name: evaluate_exact(adapter, images, prompts, 64) for name, (images, prompts) in probes.items()}
    noise = score.pop("noise_on") - score.pop("noise_off")
    return score | {"noise": round(noise, 4)}


if __name__ == "__main__":
    sys.exit(main())
