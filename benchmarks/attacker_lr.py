"""Is the evaluation's attacker competent? Clean-task accuracy of a zoo victim fine-tuned on the CLEAN
benchmark split, per learning rate, recipe and epochs.

    .venv/bin/python benchmarks/attacker_lr.py --victim zoo:llava --recipe lora --lrs 0.002,0.003,0.005,0.01 \
        --epochs 3 --seeds 0,1 --out benchmarks/out/attacker_lr

A protection figure means something only against an attacker who learns the task from clean data: one
whose clean-trained accuracy is near the floor divides by almost nothing (docs/evaluation.md, "What one
cell measures"). The twenty-eighth session found the LoRA recipe's rate (then 10x the full fine-tune's)
past the stable range on its zoo build with this script. Prints one line per run; writes OUT.json / OUT.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import code_state, output_file, write_json, write_task, zoo_state  # noqa: E402
from mmguard_core.data import load_dataset  # noqa: E402
from mmguard_core.evaluate import load_victim, majority_rate, read_split  # noqa: E402
from mmguard_core.models.training import RECIPES, evaluate_exact, finetune  # noqa: E402


def numbers(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--victim", default="zoo:llava", help="zoo:FAMILY[@SEED]")
    parser.add_argument("--zoo-size", default="small")
    parser.add_argument("--task", default="color@0.2")
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--recipe", default="lora", choices=RECIPES)
    parser.add_argument("--lrs", default="0.002,0.003,0.005,0.01")
    parser.add_argument("--epochs", default="3", help="comma list")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/attacker_lr"))
    args = parser.parse_args(argv)
    if not args.victim.startswith("zoo:"):
        parser.error("--victim: a zoo:FAMILY[@SEED] spec (the benchmark's victims)")
    lrs, epochs, seeds = numbers(args.lrs), numbers(args.epochs), numbers(args.seeds, int)
    if not lrs or not epochs or not seeds:
        parser.error("--lrs, --epochs and --seeds each need at least one value")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, test_dir = write_task(Path(tmp), args.task, args.train, args.test)
        train, test = read_split(load_dataset(train_dir)), read_split(load_dataset(test_dir))
    floor = majority_rate(test.answers)  # the evaluation's floor
    rows = []
    for lr in lrs:
        for n_epochs in epochs:
            for seed in seeds:
                started = time.perf_counter()
                adapter = load_victim(args.victim, args.zoo_size)
                history = finetune(adapter, train.images, train.prompts(), epochs=n_epochs, lr=lr, batch_size=16,
                                   recipe=args.recipe, seed=seed)
                accuracy = evaluate_exact(adapter, test.images, test.prompts())
                tail = history[-10:]
                rows.append({"lr": lr, "epochs": n_epochs, "seed": seed, "acc_clean": accuracy,
                             "final_loss": sum(tail) / len(tail), "seconds": time.perf_counter() - started})
                print(f"{args.victim} {args.recipe} lr {lr:g} {n_epochs:g} epochs seed {seed}: clean accuracy "
                      f"{accuracy:.3f} (floor {floor:.3f}), final loss {rows[-1]['final_loss']:.3f}", flush=True)
    family_spec = args.victim.removeprefix("zoo:")
    setup = {"victim": args.victim, "zoo_size": args.zoo_size, "task": args.task, "train": args.train,
             "test": args.test, "recipe": args.recipe, "batch_size": 16, "floor": floor, "code": code_state(),
             "zoo_state": zoo_state(args.zoo_size, used=[family_spec])}
    write_json(output_file(args.out, ".json"), {"setup": setup, "runs": rows})
    lines = [f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/attacker_lr.py', *(argv or sys.argv[1:])])}`", "",
             f"Victim `{args.victim}` ({args.recipe}, batch 16), task `{args.task}`, train {args.train} / test "
             f"{args.test} clean samples, floor {floor:.3f}; zoo hash {setup['zoo_state']['weights_sha256']} "
             f"({setup['zoo_state']['cpu']}).", "",
             "| lr | epochs | clean accuracy, mean (per seed) | final loss, mean |", "| --- | --- | --- | --- |"]
    for lr in lrs:
        for n_epochs in epochs:
            group = [r for r in rows if r["lr"] == lr and r["epochs"] == n_epochs]
            per_seed = ", ".join(f"{r['acc_clean']:.3f}" for r in group)
            lines.append(f"| {lr:g} | {n_epochs:g} | {statistics.mean(r['acc_clean'] for r in group):.3f} ({per_seed}) | "
                         f"{statistics.mean(r['final_loss'] for r in group):.3f} |")
    output_file(args.out, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
