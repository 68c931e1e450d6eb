"""Transfer probe: how far the image noise alone fools models that already learned the clean task
(an evasion test of the poison's noise, minutes instead of a matrix's hour).

    .venv/bin/python benchmarks/transfer_probe.py --variants control,pixel --protect-seeds 0,1,2

Each victim is fine-tuned once on the clean train split (the matrix's recipes: the base one, the
CNN's own) and kept. Each variant (ProtectionConfig overrides on top of --preset, the trigger turned
off) protects the train split once per protection seed; every clean-trained victim then answers the
clean question on the clean and on the protected train images. Per victim it prints

- kept:   accuracy on the protected images / accuracy on the clean ones (1 = the noise moves nothing);
- target: share of the protected images answered with the answer the noise aims at (the next
          answer group, `engine/protect.target_answers`).

Targeted poisons work by planting features that clean models read as another answer (Fowl et al.
2021). On the tiny zoo, though, how far a family is fooled here did not rank the families as the
poisoning does (docs/method.md, fifteenth session): read it as what the noise does to a finished
model; the matrix (benchmarks/eval_matrix.py) stays the judge of protection. Writes OUT (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import code_state, write_json, write_task  # noqa: E402
from benchmarks.eval_matrix import CNN_RECIPE  # noqa: E402
from mmguard_core.config import preset  # noqa: E402
from mmguard_core.data import load_dataset  # noqa: E402
from mmguard_core.engine.grouping import Grouping  # noqa: E402
from mmguard_core.engine.protect import target_answers  # noqa: E402
from mmguard_core.evaluate import Split, VictimRecipe, read_split  # noqa: E402
from mmguard_core.pipeline import run_protection  # noqa: E402
from mmguard_core.victims import make_victim  # noqa: E402

VARIANTS: dict[str, dict] = {
    "control": {},
    "pixel": {"sample_noise_scale": 1},
    "grid8": {"sample_noise_scale": 8},
    "robust-only": {"plain_copies": False},
    "momentum": {"momentum": 1.0},
    "classifier": {"classifier_steps": 300},
}


def aimed_answers(split: Split) -> list[str]:
    """Per sample, the answer the targeted noise aims its image at (the engine's own choice)."""
    grouping = Grouping.fit("answer", split.answers, split.images, num_clusters=1, seed=0)
    groups = grouping.assign(split.answers, split.images)
    return target_answers(split.answers, groups, range(len(groups)), grouping)


def shares(victim, split: Split, answers_to_score: list[str]) -> float:
    return victim.accuracy(split.images, Split(split.images, split.questions, answers_to_score).prompts())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="control", help=f"comma separated: {', '.join(VARIANTS)}")
    parser.add_argument("--preset", default="strong")
    parser.add_argument("--task", default="color@0.2")
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--ensemble", default="llava,qwen2_vl")
    parser.add_argument("--victims", default="zoo:llava,zoo:gemma3,zoo:internvl,zoo:idefics3,zoo:paligemma,cnn")
    parser.add_argument("--protect-seeds", default="0")
    parser.add_argument("--seed", type=int, default=0, help="victim fine-tuning seed")
    parser.add_argument("--zoo-size", default="small")
    parser.add_argument("--base", type=json.loads, default={}, help="JSON config fields under every variant")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/transfer_probe.json"))
    args = parser.parse_args()
    unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    recipe = VictimRecipe()
    results: dict = {"setup": vars(args) | {"out": str(args.out), "recipe": recipe.__dict__,
                                            "cnn_recipe": CNN_RECIPE.__dict__, "code": code_state()}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="mmguard-transfer-") as scratch:
        scratch = Path(scratch)
        train_dir, test_dir = write_task(scratch, args.task, args.train, args.test)
        clean = read_split(load_dataset(train_dir, work_dir=scratch))
        test = read_split(load_dataset(test_dir, work_dir=scratch))
        targets = aimed_answers(clean)
        victims = {}
        for spec in args.victims.split(","):
            torch.manual_seed(args.seed)
            victim = make_victim(spec, args.zoo_size)
            own = CNN_RECIPE if spec == "cnn" else recipe  # the matrix's recipes
            victim.finetune(clean.images, clean.prompts(), epochs=own.epochs, lr=own.lr,
                            batch_size=own.batch_size, seed=args.seed)
            on_clean = shares(victim, clean, clean.answers)
            victims[spec] = (victim, on_clean)
            print(f"{spec:15s} clean-trained: test {shares(victim, test, test.answers):.2f}, "
                  f"train {on_clean:.2f}", flush=True)
        for name in args.variants.split(","):
            for protect_seed in (int(s) for s in args.protect_seeds.split(",")):
                config = preset(args.preset, surrogates=[f"zoo:{f}" for f in args.ensemble.split(",")],
                                seed=protect_seed, verify=False, zoo_size=args.zoo_size,
                                **(args.base | VARIANTS[name] | {"trigger_length": 0}))
                out = scratch / f"{name}-{protect_seed}"
                t0 = time.perf_counter()
                report = run_protection(train_dir, out, config)
                noisy = read_split(load_dataset(out, work_dir=scratch))
                noisy = Split(noisy.images, clean.questions, clean.answers)
                psnr = report["summary"]["psnr_mean"]
                print(f"{name} (protection seed {protect_seed}): {time.perf_counter() - t0:.0f} s, "
                      f"PSNR {psnr:.1f} dB", flush=True)
                for spec, (victim, on_clean) in victims.items():
                    kept = shares(victim, noisy, clean.answers) / max(on_clean, 1e-9)
                    target = shares(victim, noisy, targets)
                    print(f"  {spec:15s} kept {kept:.2f}  target {target:.2f}", flush=True)
                    results["rows"].append({"variant": name, "protect_seed": protect_seed, "victim": spec,
                                            "kept": kept, "target": target, "psnr": psnr})
    print("variant         victim          kept  target (mean over protection seeds)")
    for name in args.variants.split(","):
        for spec in victims:
            rows = [r for r in results["rows"] if r["variant"] == name and r["victim"] == spec]
            print(f"{name:15s} {spec:15s} {mean(r['kept'] for r in rows):.2f}  {mean(r['target'] for r in rows):.2f}")
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
