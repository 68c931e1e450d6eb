"""Protection benchmark: white-box and held-out-family protection, image quality, time.

    .venv/bin/python benchmarks/protect_bench.py [--train 1000 --test 500] [--preset balanced]

Setup (printed with the figures): zoo models ("small"), surrogate ensemble = --ensemble families,
victims = one ensemble member (white-box) and a family left out of the ensemble (black-box), each
fine-tuned from its pretrained zoo weights on clean vs protected train data with the same recipe,
scored on the clean test split (no trigger). Data: benchmarks/common.py (code-word colour task,
easy and subtle). Figures are medians over --seeds victim seeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import config_overrides, write_json, write_task  # noqa: E402
from mmguard_core.config import preset  # noqa: E402
from mmguard_core.data import load_dataset  # noqa: E402
from mmguard_core.evaluate import VictimRecipe, evaluate_protection  # noqa: E402
from mmguard_core.models.zoo import build_zoo  # noqa: E402
from mmguard_core.pipeline import run_protection  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--tasks", default="easy,subtle")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--method", default="mmguard")
    parser.add_argument("--ensemble", default="llava,qwen2_vl,idefics3")
    parser.add_argument("--heldout", default="paligemma")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, e.g. --set bph_weight=0.5")
    parser.add_argument("--zoo-size", default="small")
    parser.add_argument("--zoo-dir", type=Path, help="use checkpoints saved under DIR/<family> instead of the zoo cache")
    parser.add_argument("--skip-fast-timing", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="protection and victim fine-tuning")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/protect_bench.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    ensemble = args.ensemble.split(",")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    overrides = config_overrides(args.set)

    def spec(family: str) -> str:
        return f"{family}:{args.zoo_dir / family}" if args.zoo_dir else f"zoo:{family}"

    t0 = time.perf_counter()
    if not args.zoo_dir:
        build_zoo(size=args.zoo_size, families=sorted(set(ensemble) | {args.heldout}))
    print(f"zoo ready in {time.perf_counter() - t0:.0f} s (cache {os.environ.get('MMGUARD_CACHE_DIR', '~/.cache/mmguard')})")
    results = {"setup": vars(args) | {"out": str(args.out)}, "tasks": {}}
    recipe = VictimRecipe(epochs=args.epochs)
    with tempfile.TemporaryDirectory(prefix="mmguard-bench-") as scratch:
        scratch = Path(scratch)
        for task in args.tasks.split(","):
            train_dir, test_dir = write_task(scratch, task, args.train, args.test)
            config = preset(args.preset, method=args.method, surrogates=[spec(f) for f in ensemble],
                            zoo_size=args.zoo_size, device=args.device, **overrides)
            t0 = time.perf_counter()
            report = run_protection(train_dir, scratch / f"{task}-protected", config)
            protect_seconds = time.perf_counter() - t0
            clean, protected, test = (load_dataset(p, work_dir=scratch) for p in
                                      (train_dir, scratch / f"{task}-protected", test_dir))
            victims = {"white-box": spec(ensemble[0]), "black-box": spec(args.heldout)}
            rows = {}
            for threat, victim in victims.items():
                result = evaluate_protection(clean, protected, test, victim, recipe, seeds, args.zoo_size,
                                             device=args.device)
                rows[threat] = result
                scores = [r["protection"] for r in result["runs"] if r["protection"] is not None]
                accs = [(r["acc_clean"], r["acc_protected"]) for r in result["runs"]]
                print(f"[{task}] {threat:9s} victim {victim:15s} protection "
                      f"{statistics.median(scores) if scores else float('nan'):.3f} "
                      f"(clean-trained acc {statistics.median(a for a, _ in accs):.3f}, protected-trained "
                      f"{statistics.median(b for _, b in accs):.3f}, floor {result['floor']:.3f}, "
                      f"before fine-tuning {result['acc_before_finetune']:.3f})")
            s, t = report["summary"], report["timings"]
            print(f"[{task}] PSNR mean {s['psnr_mean']:.2f} dB (min {s['psnr_min']:.2f}), SSIM {s['ssim_mean']:.4f}, "
                  f"L-inf max {s['linf_max'] * 255:.0f}/255; protect {protect_seconds:.0f} s, "
                  f"surrogate-pass share {t['surrogate_pass_share']:.3f}; triggers "
                  f"{(report['groups'] or {}).get('triggers')}")
            results["tasks"][task] = {"report_summary": s, "timings": t, "protect_seconds": protect_seconds,
                                      "groups": report["groups"], "victims": rows}
        if not args.skip_fast_timing:
            train_dir, _ = write_task(scratch, "easy", 1000, 10)
            config = preset("fast", surrogates=[spec(f) for f in ensemble], zoo_size=args.zoo_size,
                            device=args.device)
            t0 = time.perf_counter()
            run_protection(train_dir, scratch / "fast-protected", config)
            fast_seconds = time.perf_counter() - t0
            results["fast_1000_seconds"] = fast_seconds
            print(f"fast preset: {fast_seconds:.0f} s to protect 1000 samples (32 px, ensemble {args.ensemble}, "
                  f"{torch.get_num_threads()} thread, device {args.device})")
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
