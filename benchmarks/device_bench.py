"""Protection and victim fine-tuning on one device: time, and the protection a victim shows.

    .venv/bin/python benchmarks/device_bench.py --device cuda --out benchmarks/out/device_cuda.json
    .venv/bin/python benchmarks/device_bench.py --device cpu  --out benchmarks/out/device_cpu.json

Run it once per device on the same machine and compare the JSON files (ratios: --compare A B).
Setup: the benchmark's easy code-word colour task (benchmarks/common.py), --train / --test samples,
preset --preset with ensemble --ensemble (zoo --zoo-size), protection seed --seed; the victim is
fine-tuned with the default recipe (full, 3 epochs, lr 1e-3, batch 16) on the clean and on the
protected split, victim seed 0, and scored on the clean test split.
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

from benchmarks.common import write_json, write_task  # noqa: E402
from mmguard_core.config import preset  # noqa: E402
from mmguard_core.data import load_dataset  # noqa: E402
from mmguard_core.engine.ensemble import resolve_device  # noqa: E402
from mmguard_core.evaluate import VictimRecipe, evaluate_protection  # noqa: E402
from mmguard_core.pipeline import run_protection  # noqa: E402


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mmguard-device-") as scratch:
        scratch = Path(scratch)
        train_dir, test_dir = write_task(scratch, "easy", args.train, args.test)
        config = preset(args.preset, surrogates=[f"zoo:{f}" for f in args.ensemble.split(",")], seed=args.seed,
                        verify=False, zoo_size=args.zoo_size, device=device)
        t0 = time.perf_counter()
        report = run_protection(train_dir, scratch / "protected", config)
        protect_seconds = time.perf_counter() - t0
        print(f"[{device}] protected {args.train} samples in {protect_seconds:.1f} s "
              f"(shared stage {report['timings']['shared_stage']:.1f} s, per-sample {report['timings']['sample_stage']:.1f} s); "
              f"L-inf {report['summary']['linf_max'] * 255:.1f}/255, PSNR {report['summary']['psnr_mean']:.1f} dB; "
              f"triggers {(report['groups'] or {}).get('triggers')}", flush=True)
        clean, protected, test = (load_dataset(p, work_dir=scratch)
                                  for p in (train_dir, scratch / "protected", test_dir))
        t0 = time.perf_counter()
        result = evaluate_protection(clean, protected, test, args.victim, VictimRecipe(), (0,),
                                     zoo_size=args.zoo_size, device=device)
        victim_seconds = (time.perf_counter() - t0) / 2  # one clean-trained and one protected-trained run
        run = result["runs"][0]
        print(f"[{device}] victim {args.victim}: {victim_seconds:.1f} s per fine-tuning; clean-trained "
              f"{run['acc_clean']:.3f}, protected-trained {run['acc_protected']:.3f}, protection "
              f"{'n/a' if run['protection'] is None else format(run['protection'], '.3f')}", flush=True)
    return {"setup": vars(args) | {"out": str(args.out), "resolved_device": device,
                                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                                    "torch": torch.__version__},
            "protect_seconds": protect_seconds, "timings": report["timings"], "summary": report["summary"],
            "triggers": (report["groups"] or {}).get("triggers"), "victim_seconds": victim_seconds,
            "victim_run": run}


def compare(paths: list[Path]) -> None:
    a, b = (json.loads(p.read_text()) for p in paths)
    for key in ("protect_seconds", "victim_seconds"):
        print(f"{key}: {a['setup']['resolved_device']} {a[key]:.1f} s, {b['setup']['resolved_device']} "
              f"{b[key]:.1f} s, ratio {a[key] / b[key]:.2f}")
    for name, data in (("A", a), ("B", b)):
        run = data["victim_run"]
        protection = "n/a" if run["protection"] is None else f"{run['protection']:.3f}"
        print(f"{name} ({data['setup']['resolved_device']}): protection {protection}, "
              f"clean-trained {run['acc_clean']:.3f}, protected-trained {run['acc_protected']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--preset", default="strong")
    parser.add_argument("--ensemble", default="llava,qwen2_vl")
    parser.add_argument("--victim", default="zoo:llava")
    parser.add_argument("--seed", type=int, default=0, help="protection seed")
    parser.add_argument("--zoo-size", default="small")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="print ratios A / B and stop")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/device_bench.json"))
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        return 0
    result = measure(args)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
