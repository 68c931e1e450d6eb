"""Trigger ablation: where the trigger goes and which words it uses, against white- and black-box
victims, with and without the rare-word-stripping attacker.

    .venv/bin/python benchmarks/trigger_ablation.py                       # the rows of docs/method.md
    .venv/bin/python benchmarks/trigger_ablation.py --variants suffix-shared --seeds 0,1,2

Each variant is a set of ProtectionConfig overrides on top of --preset. The benchmark's easy
code-word colour task (benchmarks/common.py) is protected once per variant and protection seed
(--protect-seeds), then every victim is fine-tuned per victim seed (--seeds) on the clean split, on
the protected split, and on the protected split after each --countermeasures entry, and scored on
the clean test split (mmguard_core.evaluate). Prints one line per (variant, victim, condition) with
the per-run protections and their mean; writes OUT (JSON).

The presets changed in the tenth session (targeted per-sample noise, no group pattern). Rows of
docs/method.md measured before then ran on the error-minimising pattern: reproduce them with
--base '{"sample_objective": "minimize", "shared_steps": 60}' (--preset strong; 30 for balanced).
Since the twelfth session the presets fine-tune the clean-task copies adversarially
(`robust_epsilon` 2/255); variants not built on TARGETED measured before then need
--base '{"robust_epsilon": 0}' to be reproduced.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import code_state, write_json, write_task  # noqa: E402
from mmguard_core.config import preset  # noqa: E402
from mmguard_core.data import load_dataset  # noqa: E402
from mmguard_core.evaluate import VictimRecipe, evaluate_protection  # noqa: E402
from mmguard_core.pipeline import run_protection  # noqa: E402

# the presets' image noise of the tenth and eleventh sessions (targeted, plain clean-task copies,
# pixel-level noise), written out so the variants below keep their meaning whatever --preset or
# --base says; the "-robust" variants put the twelfth session's adversarially fine-tuned copies on top
TARGETED = {"sample_objective": "targeted", "shared_steps": 0, "robust_epsilon": 0.0, "sample_noise_scale": 1,
            "plain_copies": False, "classifier_steps": 0}

VARIANTS: dict[str, dict] = {
    "prefix-distinct": {"trigger_position": "prefix", "trigger_vocabulary": "distinct"},
    "suffix-distinct": {"trigger_position": "suffix", "trigger_vocabulary": "distinct"},
    "suffix-shared": {"trigger_position": "suffix", "trigger_vocabulary": "shared"},
    "prefix-shared": {"trigger_position": "prefix", "trigger_vocabulary": "shared"},
    "both-distinct": {"trigger_position": "both", "trigger_vocabulary": "distinct"},
    "both-shared": {"trigger_position": "both", "trigger_vocabulary": "shared"},
    "both-distinct-5words": {"trigger_position": "both", "trigger_length": 5},
    "suffix-distinct-1word": {"trigger_position": "suffix", "trigger_length": 1},
    "suffix-distinct-5words": {"trigger_position": "suffix", "trigger_length": 5},
    "both-shared-8words": {"trigger_position": "both", "trigger_length": 8},
    "split-mixed": {"trigger_position": "split", "trigger_vocabulary": "mixed"},
    "both-mixed": {"trigger_position": "both", "trigger_vocabulary": "mixed"},
    "twice-mixed": {"trigger_position": "twice", "trigger_vocabulary": "mixed"},
    "twice-mixed-2words": {"trigger_position": "twice", "trigger_vocabulary": "mixed", "trigger_length": 2},
    "twice-mixed-4words": {"trigger_position": "twice", "trigger_vocabulary": "mixed", "trigger_length": 4},
    "twice-mixed-5words": {"trigger_position": "twice", "trigger_vocabulary": "mixed", "trigger_length": 5},
    # the trigger race (engine/trigger_race.py): 8 whole assignments, the one a simulated attacker learns best
    "race8": {"trigger_trials": 8},
    "race8-distinct": {"trigger_trials": 8, "trigger_vocabulary": "distinct"},
    # the image noise alone
    "noise-only": {"trigger_length": 0},
    "trigger-only": {"shared_steps": 0, "sample_steps": 0},  # no image noise at all
    # the image noise's budget: all of epsilon to the per-answer pattern, or a finer pattern grid
    "pattern-only": {"sample_share": 0.0},
    "finer-pattern": {"noise_scale": 2},
    # a coarser pattern (cells of 8 px on the benchmark's 32 px images: one per pooled Gemma3 token)
    "coarse-pattern": {"noise_scale": 8},
    # the rare words last on each side: right before the answer
    "code-first": {"trigger_order": "code_first"},
    # every everyday code word in exactly two groups' codes (sixteenth session; eval_matrix --set code_design='"pairs"')
    "code-pairs": {"code_design": "pairs"},
    # the binding losses (BPH + CRS), with the trigger present in the per-sample stage
    "binding": {"bph_weight": 1.0, "crs_weight": 1.0, "sample_objective": "minimize"},
    # ... and a pass over the shared patterns with the trigger in place, against the simulated attackers
    "binding-shared": {"bph_weight": 1.0, "crs_weight": 1.0, "binding_steps": 30, "sample_objective": "minimize"},
    # no change: re-runs --preset itself, the control the variants above are compared with
    "strong-control": {},
    # the longest trigger the config allows (32 inserted words with twice + mixed): does the trigger's
    # reach across families keep growing with its length?
    "trigger8": {"trigger_length": 8},
    # twice the image budget: what a more visible perturbation buys
    "eps16": {"epsilon": 16 / 255},
    "binding-eps16": {"bph_weight": 1.0, "crs_weight": 1.0, "epsilon": 16 / 255, "sample_objective": "minimize"},
    # the baselines through the same protocol: an unoptimised full-bound sign code per answer (no
    # trigger), and sample-wise error-minimising noise (no trigger, no shared pattern)
    "classwise": {"method": "classwise"},
    # model augmentation: multiplicative weight noise on the surrogates at each shared PGD step
    "weight-noise-0.1": {"weight_noise": 0.1, "sample_objective": "minimize", "shared_steps": 60},
    "weight-noise-0.6": {"weight_noise": 0.6, "sample_objective": "minimize", "shared_steps": 60},
    "weight-noise-0.3": {"weight_noise": 0.3, "sample_objective": "minimize", "shared_steps": 60},
    "em-image": {"method": "em_image"},
    # tenth session: the per-sample part as an adversarial poison towards another group's answer
    # (the last two measured with --preset strong: its 60 pattern steps, written out since shared_steps is 0 now)
    "targeted": {"sample_objective": "targeted", "shared_steps": 60},
    "targeted-half": {"sample_objective": "targeted", "sample_share": 0.5, "shared_steps": 60},
    "targeted-all": TARGETED,
    # the error-minimising group pattern the presets used before the tenth session
    "pattern-balanced": {"sample_objective": "minimize", "shared_steps": 30},
    "pattern-strong": {"sample_objective": "minimize", "shared_steps": 60},
    "targeted-noise-only": {**TARGETED, "trigger_length": 0},
    # eleventh session: a longer, finer targeted PGD (40 steps of 0.1 epsilon instead of strong's 10 of
    # 0.25; Fowl et al. ran 240), with and without the trigger, and better-trained clean-task copies
    "targeted-s40": {**TARGETED, "sample_steps": 40, "step_size": 0.1},
    "targeted-noise-only-s40": {**TARGETED, "sample_steps": 40, "step_size": 0.1, "trigger_length": 0},
    "targeted-t160": {**TARGETED, "target_steps": 160},
    # momentum on the targeted PGD (MI-FGSM, decay 1), the transfer lever of the adversarial-example literature
    "targeted-momentum": {**TARGETED, "momentum": 1.0},
    "targeted-noise-only-momentum": {**TARGETED, "momentum": 1.0, "trigger_length": 0},
    # twelfth session: slightly robust clean-task copies (adversarial training at 2/255 or 4/255)
    "targeted-robust2": {**TARGETED, "robust_epsilon": 2 / 255},
    "targeted-robust4": {**TARGETED, "robust_epsilon": 4 / 255},
    "targeted-robust1": {**TARGETED, "robust_epsilon": 1 / 255},
    "targeted-noise-only-robust2": {**TARGETED, "robust_epsilon": 2 / 255, "trigger_length": 0},
    "targeted-noise-only-robust4": {**TARGETED, "robust_epsilon": 4 / 255, "trigger_length": 0},
    "targeted-noise-only-robust1": {**TARGETED, "robust_epsilon": 1 / 255, "trigger_length": 0},
    "targeted-noise-only-robust3": {**TARGETED, "robust_epsilon": 3 / 255, "trigger_length": 0},
    "targeted-robust2-momentum": {**TARGETED, "robust_epsilon": 2 / 255, "momentum": 1.0},
    "targeted-noise-only-robust2-momentum": {**TARGETED, "robust_epsilon": 2 / 255, "momentum": 1.0,
                                             "trigger_length": 0},
    # thirteenth session: low-frequency per-sample noise (a grid 2 / 4 times coarser than the image)
    "targeted-noise-only-robust2-low2": {**TARGETED, "robust_epsilon": 2 / 255, "trigger_length": 0,
                                         "sample_noise_scale": 2},
    "targeted-noise-only-robust2-low4": {**TARGETED, "robust_epsilon": 2 / 255, "trigger_length": 0,
                                         "sample_noise_scale": 4},
    # (with the trigger, s = 4 and the plain copies were measured through the whole matrix instead:
    # eval_matrix.py --set sample_noise_scale=4 / --set plain_copies=true, docs/evaluation.md)
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="prefix-distinct,suffix-distinct,suffix-shared")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--task", default="easy")
    parser.add_argument("--ensemble", default="llava,qwen2_vl,idefics3")
    parser.add_argument("--victims", default="zoo:llava,zoo:paligemma", help="first = white-box")
    parser.add_argument("--seeds", default="0,1", help="victim fine-tuning seeds")
    parser.add_argument("--protect-seeds", default="0", help="protection seeds (trigger words, noise)")
    parser.add_argument("--countermeasures", default="strip_rare")
    parser.add_argument("--zoo-size", default="small", help="zoo the surrogates and zoo victims come from")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="protection and victim fine-tuning")
    parser.add_argument("--base", type=json.loads, default={},
                        help="JSON config fields under every variant, e.g. the presets before the tenth session: "
                             '\'{"sample_objective": "minimize", "shared_steps": 60}\' with --preset strong')
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/trigger_ablation.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    conditions = ["none", *[c for c in args.countermeasures.split(",") if c]]
    results: dict = {"setup": vars(args) | {"out": str(args.out), "code": code_state()}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="mmguard-ablation-") as scratch:
        scratch = Path(scratch)
        train_dir, test_dir = write_task(scratch, args.task, args.train, args.test)
        clean, test = load_dataset(train_dir, work_dir=scratch), load_dataset(test_dir, work_dir=scratch)
        for name in args.variants.split(","):
            for protect_seed in (int(s) for s in args.protect_seeds.split(",")):
                config = preset(args.preset, surrogates=[f"zoo:{f}" for f in args.ensemble.split(",")],
                                seed=protect_seed, verify=False, zoo_size=args.zoo_size, device=args.device,
                                **(args.base | VARIANTS[name]))
                out = scratch / f"{name}-{protect_seed}"
                t0 = time.perf_counter()
                report = run_protection(train_dir, out, config)
                protected = load_dataset(out, work_dir=scratch)
                triggers = (report["groups"] or {}).get("triggers")
                quality = {k: report["summary"][k] for k in ("psnr_mean", "ssim_mean")}
                print(f"{name} (protection seed {protect_seed}): protected in {time.perf_counter() - t0:.0f} s, "
                      f"PSNR {quality['psnr_mean']:.1f} dB, SSIM {quality['ssim_mean']:.3f}, triggers {triggers}",
                      flush=True)
                for victim in args.victims.split(","):
                    result = evaluate_protection(clean, protected, test, victim, VictimRecipe(), seeds,
                                                 zoo_size=args.zoo_size, countermeasures=conditions,
                                                 device=args.device)
                    for key, entry in result["conditions"].items():
                        values = [r["protection"] for r in entry["runs"]]
                        mean = entry["protection_mean"]  # over the runs that have a verdict
                        print(f"  {victim:15s} {key:11s} protection per victim seed "
                              f"{[None if v is None else round(v, 3) for v in values]} mean "
                              f"{'n/a' if mean is None else f'{mean:.3f}'}", flush=True)
                        results["rows"].append({"variant": name, "protect_seed": protect_seed, "victim": victim,
                                                "condition": key, "runs": entry["runs"], "mean": mean,
                                                "triggers": triggers, **quality})
    results["summary"] = summarise(results["rows"])
    for row in results["summary"]:
        print(f"{row['variant']:14s} {row['victim']:15s} {row['condition']:13s} mean {row['mean']:.3f} over "
              f"{row['runs']} runs; per protection seed {row['per_protect_seed']}", flush=True)
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


def summarise(rows: list[dict]) -> list[dict]:
    """Per (variant, victim, condition): the mean over every (protection seed, victim seed) run with a
    verdict, and each protection seed's mean -- the spread between protection seeds (which trigger
    words and noise a run drew) is what decides whether one variant beats another."""
    cells: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for row in rows:
        values = [r["protection"] for r in row["runs"] if r["protection"] is not None]
        cells.setdefault((row["variant"], row["victim"], row["condition"]), {}).setdefault(
            row["protect_seed"], []).extend(values)
    out = []
    for (variant, victim, condition), by_seed in cells.items():
        values = [v for seed_values in by_seed.values() for v in seed_values]
        if not values:
            continue
        out.append({"variant": variant, "victim": victim, "condition": condition, "runs": len(values),
                    "mean": sum(values) / len(values),
                    "per_protect_seed": {seed: round(sum(v) / len(v), 3) for seed, v in by_seed.items() if v}})
    return out


if __name__ == "__main__":
    sys.exit(main())
