"""Evaluation matrix: protection per threat model, attacker recipe, countermeasure and clean-data mix.

    .venv/bin/python benchmarks/eval_matrix.py --quick          # reduced matrix, a few minutes on CPU
    .venv/bin/python benchmarks/eval_matrix.py                  # the full matrix (issue 5)

Protects the benchmark train split (benchmarks/common.py: colour question with code-word answers,
which the zoo victims have not learned in pretraining) with the surrogate ensemble, then fine-tunes
each victim from its pretrained weights on the clean and on the protected split with the same recipe
and scores both on the clean test split (mmguard_core.evaluate). Threat models:

- white-box: the first ensemble member itself;
- gray-box: the same family pretrained with another seed (zoo:FAMILY@1);
- black-box: families left out of the ensemble, and the project's non-transformer VQA model
  (``cnn``: CNN image encoder + bag-of-words question encoder, trained from scratch, own recipe).

Countermeasures (on the protected split, before fine-tuning) and clean-data mixes run on the
--cm-victims; recipe variants on the white-box family. Every figure is mean ± population std over
--seeds (victim fine-tuning seeds; the protection itself is computed once per task).

Writes OUT/eval_matrix.json, OUT/eval_matrix.md and OUT/eval_matrix.png (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    code_state,
    config_overrides,
    describe_code,
    describe_zoo,
    output_file,
    write_task,
    zoo_state,
)
from mmguard_core.config import preset  # noqa: E402
from mmguard_core.data import load_dataset  # noqa: E402
from mmguard_core.evaluate import COUNTERMEASURES, VictimRecipe, evaluate_protection  # noqa: E402
from mmguard_core.models.training import LORA_LR_FACTOR  # noqa: E402
from mmguard_core.pipeline import run_protection  # noqa: E402

# quick: countermeasures and mixes on the white-box victim only, one held-out LVLM family (about 6 min
# on one idle core; the docs/evaluation.md run widened it with --heldout / --cm-victims)
QUICK = {"train": 200, "test": 100, "tasks": "easy", "preset": "fast", "ensemble": "llava,qwen2_vl",
         "heldout": "paligemma", "seeds": "0,1,2", "fractions": "0.5,0.8", "cm_victims": "white-box",
         "recipes": "lr3e-4,lora,freeze_vision,epochs6"}
FULL = {"train": 1000, "test": 500, "tasks": "easy,subtle", "preset": "balanced", "ensemble": "llava,qwen2_vl,idefics3",
        "heldout": "paligemma", "seeds": "0,1,2", "fractions": "0.5,0.8", "cm_victims": "white-box,gray-box,black-box",
        "recipes": "lr3e-4,lora,freeze_vision,epochs6"}
TARGETS = {"white-box": 0.99, "gray-box": 0.95, "black-box": 0.95, "countermeasure": 0.85, "iss": 0.70}
CNN_RECIPE = VictimRecipe(epochs=10.0, lr=3e-3, batch_size=16)  # from scratch: needs more steps


def recipe_variants(base: VictimRecipe) -> dict[str, VictimRecipe]:
    return {
        "lr3e-4": VictimRecipe(**(asdict(base) | {"lr": base.lr * 0.3})),
        # LoRA at LORA_LR_FACTOR (3x) the full fine-tune's rate, 10x until the twenty-eighth session: a victim
        # that cannot learn the clean task says nothing about protection (docs/evaluation.md)
        "lora": VictimRecipe(**(asdict(base) | {"recipe": "lora", "lr": base.lr * LORA_LR_FACTOR})),
        "freeze_vision": VictimRecipe(**(asdict(base) | {"freeze_vision": True})),
        "epochs6": VictimRecipe(**(asdict(base) | {"epochs": base.epochs * 2})),
    }


def fmt(mean, spread, n=None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {spread:.3f}" + (f" (n={n})" if n is not None and n < 3 else "")


def acc_pair(runs, key="acc_protected") -> str:
    clean = [r["acc_clean"] for r in runs]
    prot = [r[key] for r in runs]
    return f"{sum(clean) / len(clean):.3f} / {sum(prot) / len(prot):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced matrix (defaults in QUICK)")
    parser.add_argument("--train", type=int)
    parser.add_argument("--test", type=int)
    parser.add_argument("--tasks")
    parser.add_argument("--preset")
    parser.add_argument("--ensemble")
    parser.add_argument("--heldout", help="black-box LVLM families, comma separated")
    parser.add_argument("--graybox", default="", help="FAMILY@SEED (default: first ensemble member @1); 'off' to skip")
    parser.add_argument("--no-cnn", action="store_true", help="skip the non-transformer victim")
    parser.add_argument("--seeds")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--countermeasures", default=",".join(c for c in COUNTERMEASURES if c != "none"))
    parser.add_argument("--cm-victims", help="threat models the countermeasures and mixes run on")
    parser.add_argument("--cm-reference", action="store_true",
                        help="also fine-tune on clean data with each countermeasure (protection_vs_cm_clean)")
    parser.add_argument("--recipes", help="recipe variants on the white-box family: lr3e-4,lora,freeze_vision,epochs6")
    parser.add_argument("--fractions", help="protected shares < 1 to mix with clean data")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="protection config override")
    parser.add_argument("--zoo-size", default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="protection and victim fine-tuning")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/eval_matrix"))
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    ensemble = args.ensemble.split(",")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    overrides = config_overrides(args.set)
    base = VictimRecipe(epochs=args.epochs, lr=args.lr)
    countermeasures = ["none"] + [c for c in args.countermeasures.split(",") if c and c != "none"]
    fractions = [float(f) for f in args.fractions.split(",") if f]
    cm_victims = set(args.cm_victims.split(","))
    variants = {k: v for k, v in recipe_variants(base).items() if k in args.recipes.split(",")}

    threats: list[tuple[str, str]] = [("white-box", f"zoo:{ensemble[0]}")]
    gray = args.graybox or f"{ensemble[0]}@1"
    if gray != "off":
        threats.append(("gray-box", f"zoo:{gray}"))
    threats += [("black-box", f"zoo:{family}") for family in args.heldout.split(",") if family]
    if not args.no_cnn:
        threats.append(("black-box (non-transformer)", "cnn"))

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", flush=True)

    setup = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    setup |= {"victims": threats, "base_recipe": asdict(base), "cnn_recipe": asdict(CNN_RECIPE),
              "recipe_variants": {k: asdict(v) for k, v in variants.items()}, "torch_threads": torch.get_num_threads(),
              "zoo_cache": os.environ.get("MMGUARD_CACHE_DIR", "~/.cache/mmguard/zoo"), "code": code_state()}
    results: dict = {"setup": setup, "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="mmguard-matrix-") as scratch:
        scratch = Path(scratch)
        for task in args.tasks.split(","):
            train_dir, test_dir = write_task(scratch, task, args.train, args.test)
            config = preset(args.preset, surrogates=[f"zoo:{f}" for f in ensemble], zoo_size=args.zoo_size,
                            device=args.device, **overrides)
            t0 = time.perf_counter()
            report = run_protection(train_dir, scratch / f"{task}-protected", config)
            protect_seconds = time.perf_counter() - t0
            log(f"[{task}] protected {args.train} samples in {protect_seconds:.0f} s; "
                f"PSNR {report['summary']['psnr_mean']:.2f} dB, triggers {(report['groups'] or {}).get('triggers')}")
            clean, protected, test = (load_dataset(p, work_dir=scratch) for p in
                                      (train_dir, scratch / f"{task}-protected", test_dir))
            # the task's entry is filled row by row and written after each (partial results survive)
            rows: dict = {"report_summary": report["summary"], "groups": report["groups"],
                          "protect_seconds": protect_seconds, "threats": {}, "recipes": {}}
            results["tasks"][task] = rows
            for threat, spec in threats:
                heavy = threat in cm_victims or (threat.startswith("black-box") and "black-box" in cm_victims
                                                 and spec != "cnn")
                recipe = CNN_RECIPE if spec == "cnn" else base
                result = evaluate_protection(
                    clean, protected, test, spec, recipe, seeds, args.zoo_size,
                    countermeasures=countermeasures if heavy else ["none"],
                    protect_fractions=fractions if heavy else [1.0],
                    countermeasure_reference=args.cm_reference and heavy, progress=lambda m, t=task: log(f"[{t}] {m}"),
                    device=args.device)
                rows["threats"][f"{threat} {spec}"] = {"threat": threat, **result}
                write_outputs(results, args.out, argv=sys.argv, plot_too=False)
                log(f"[{task}] {threat} {spec}: protection {fmt(result['protection_mean'], result['protection_std'])}")
            for name, recipe in variants.items():
                spec = threats[0][1]
                result = evaluate_protection(clean, protected, test, spec, recipe, seeds, args.zoo_size,
                                             progress=lambda m, t=task: log(f"[{t}] {m}"), device=args.device)
                rows["recipes"][name] = result
                write_outputs(results, args.out, argv=sys.argv, plot_too=False)
                log(f"[{task}] recipe {name} on {spec}: protection {fmt(result['protection_mean'], result['protection_std'])}")
    results["seconds"] = time.perf_counter() - started
    # at the end, so the victims the run built on demand exist; only the checkpoints it loaded
    # (surrogates and zoo victims), not whatever else the cache holds
    used = ensemble + [spec for _, spec in threats if spec.startswith("zoo:")]
    setup["zoo_state"] = zoo_state(args.zoo_size, used=used)
    write_outputs(results, args.out, argv=sys.argv)
    log(f"wrote {args.out}.json / .md / .png")
    return 0


def write_outputs(results: dict, out: Path, argv: list[str], plot_too: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    output_file(out, ".json").write_text(json.dumps(results, indent=2, default=str))
    output_file(out, ".md").write_text(markdown(results, argv))
    if not plot_too:
        return
    try:
        plot(results, output_file(out, ".png"))
    except ImportError:
        print("matplotlib missing (pip install -e '.[dev]'): no plot", file=sys.stderr)


def markdown(results: dict, argv: list[str]) -> str:
    setup = results["setup"]
    lines = [f"Command: `.venv/bin/python benchmarks/eval_matrix.py {' '.join(argv[1:])}`", ""]
    lines.append(f"Setup: train {setup['train']} / test {setup['test']} samples (benchmarks/common.py), preset "
                 f"`{setup['preset']}` (ε = 8/255), ensemble {setup['ensemble']}, zoo size {setup['zoo_size']}, "
                 f"victim seeds {setup['seeds']}, base recipe {setup['base_recipe']}, non-transformer recipe "
                 f"{setup['cnn_recipe']}, {setup['torch_threads']} torch thread(s)."
                 + (f" Wall time {results['seconds'] / 60:.1f} min." if "seconds" in results else " (partial)"))
    lines += ["", describe_code(setup.get("code")), "", describe_zoo([setup.get("zoo_state")])]
    lines.append("")
    lines.append("Protection = 1 − (acc_protected − floor)/(acc_clean − floor), capped at 1, floor = test majority "
                 "rate; mean ± population std over seeds. acc columns: clean-trained / protected-trained "
                 "exact match on the clean test split.")
    for task, rows in results["tasks"].items():
        s = rows["report_summary"]
        lines += ["", f"### Task `{task}`", "",
                  f"Image quality: PSNR {s['psnr_mean']:.2f} dB (min {s['psnr_min']:.2f}), SSIM {s['ssim_mean']:.4f}, "
                  f"L∞ {s['linf_max'] * 255:.0f}/255; protection took {rows['protect_seconds']:.0f} s.", "",
                  "| threat model | victim | floor | before FT | acc clean / protected | protection | target |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows["threats"].values():
            before = r["acc_before_finetune"]
            target = TARGETS.get(r["threat"].split(" (")[0], "")
            lines.append(f"| {r['threat']} | `{r['victim']}` | {r['floor']:.3f} | "
                         f"{'n/a' if before is None else f'{before:.3f}'} | {acc_pair(r['runs'])} | "
                         f"{fmt(r['protection_mean'], r['protection_std'])} | ≥ {target} |")
        heavy = [r for r in rows["threats"].values() if len(r["conditions"]) > 1]
        if heavy:
            lines += ["", "Countermeasures on the protected split, and clean data mixed in (protection; target "
                      f"≥ {TARGETS['countermeasure']}, ISS ≥ {TARGETS['iss']}):", ""]
            lines.append("| countermeasure | " + " | ".join(f"`{r['victim']}`" for r in heavy) + " |")
            lines.append("| --- |" + " --- |" * len(heavy))
            keys = list(heavy[0]["conditions"])
            for key in keys:
                cm = key.split("@")[0]
                label = COUNTERMEASURES[cm].label if "@" not in key else f"protect {key.split('@')[1]} (rest clean)"
                cells = []
                for r in heavy:
                    c = r["conditions"].get(key)
                    if c is None:
                        cells.append("")
                        continue
                    cell = f"{fmt(c['protection_mean'], c['protection_std'])} ({acc_pair(c['runs']).split(' / ')[1]})"
                    if c.get("protection_vs_cm_clean_mean") is not None or "protection_vs_cm_clean_std" in c:
                        cell += f"; vs clean+cm {fmt(c.get('protection_vs_cm_clean_mean'), c.get('protection_vs_cm_clean_std', 0))}"
                    cells.append(cell)
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
            lines.append("(in brackets: protected-trained accuracy)")
        if rows["recipes"]:
            lines += ["", "Attacker recipes on the white-box family:", "",
                      "| recipe | settings | acc clean / protected | protection |", "| --- | --- | --- | --- |"]
            for name, r in rows["recipes"].items():
                rc = r["recipe"]
                lines.append(f"| {name} | {rc['recipe']}, lr {rc['lr']:g}, {rc['epochs']:g} epochs"
                             f"{', frozen vision' if rc['freeze_vision'] else ''} | {acc_pair(r['runs'])} | "
                             f"{fmt(r['protection_mean'], r['protection_std'])} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"].items())
    fig, axes = plt.subplots(len(tasks), 3, figsize=(17, 4.5 * len(tasks)), squeeze=False)
    for row, (task, rows) in enumerate(tasks):
        ax = axes[row][0]
        threats = list(rows["threats"].values())
        labels = [f"{r['threat']}\n{r['victim']}" for r in threats]
        means = [r["protection_mean"] or 0.0 for r in threats]
        ax.bar(range(len(threats)), means, yerr=[r["protection_std"] for r in threats], capsize=3, color="tab:blue")
        ax.set_xticks(range(len(threats)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"[{task}] protection per threat model")
        ax2 = axes[row][1]
        heavy = [r for r in threats if len(r["conditions"]) > 1]
        if heavy:
            keys = list(heavy[0]["conditions"])
            width = 0.8 / len(heavy)
            for k, r in enumerate(heavy):
                ms = [(r["conditions"].get(key) or {}).get("protection_mean") or 0.0 for key in keys]
                ss = [(r["conditions"].get(key) or {}).get("protection_std") or 0.0 for key in keys]
                ax2.bar([i + k * width for i in range(len(keys))], ms, width, yerr=ss, capsize=2, label=r["victim"])
            ax2.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys, rotation=40, ha="right", fontsize=7)
            ax2.legend(fontsize=7)
        ax2.set_title(f"[{task}] protection per countermeasure / mix")
        ax3 = axes[row][2]
        recipes = [("base", threats[0])] + list(rows["recipes"].items())
        ax3.bar(range(len(recipes)), [r["protection_mean"] or 0.0 for _, r in recipes],
                yerr=[r["protection_std"] for _, r in recipes], capsize=3, color="tab:green")
        ax3.set_xticks(range(len(recipes)), [n for n, _ in recipes], rotation=30, ha="right", fontsize=7)
        ax3.set_title(f"[{task}] protection per attacker recipe (white-box)")
        for ax_ in (ax, ax2, ax3):
            ax_.set_ylim(max(-0.6, min(0.0, *[p.get_height() for p in ax_.patches] or [0.0]) - 0.05), 1.05)
            ax_.axhline(0.95, color="grey", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
