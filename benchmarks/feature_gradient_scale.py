"""How large the feature term's image gradient is beside the answer loss's, per surrogate copy.

The targeted per-sample noise takes signed steps along the gradient of the weighted sum of the
models' losses, so a term whose gradient is 100x another's decides every step alone. This script
makes the clean-task copies exactly as a protection run does (same preset, seed, data), then on the
first batches prints, for each LVLM copy, the mean |d loss / d pixel| of the answer loss and of the
feature term (engine/feature_target.py), and their ratio: `target_feature_weight` = ratio makes
the two pull equally hard on that copy.

    MMGUARD_CACHE_DIR=... .venv/bin/python benchmarks/feature_gradient_scale.py --zoo-size small --seed 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import write_task  # noqa: E402
from mmguard_core.config import preset  # noqa: E402
from mmguard_core.data import load_dataset  # noqa: E402
from mmguard_core.engine.ensemble import load_ensemble  # noqa: E402
from mmguard_core.engine.feature_target import (  # noqa: E402
    build_anchor,
    capture_layer_input,
    feature_term,
    pooled_image_states,
    supports_states,
)
from mmguard_core.engine.protect import _clean_task_copies, learn_shared, target_answers  # noqa: E402
from mmguard_core.engine.triggers import base_prompt  # noqa: E402
from mmguard_core.pipeline import read_shard_input  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="color@0.2")
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--preset", default="strong")
    parser.add_argument("--ensemble", default="llava,qwen2_vl")
    parser.add_argument("--zoo-size", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = preset(args.preset, surrogates=[f"zoo:{f}" for f in args.ensemble.split(",")],
                    zoo_size=args.zoo_size, device="cpu", seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="mmguard-scale-") as scratch:
        train_dir, _ = write_task(Path(scratch), args.task, args.train, 1)
        with load_dataset(train_dir, work_dir=scratch) as dataset:
            data, _ = read_shard_input(dataset)
    surrogates = load_ensemble(config)
    shared = learn_shared(data, surrogates, config)
    groups = shared.grouping.assign(data.answers, data.images)
    clean = [base_prompt(q, a) for q, a in zip(data.questions, data.answers, strict=True)]
    targets = target_answers(data.answers, groups, data.indices, shared.grouping)
    wanted = [base_prompt(q, t) for q, t in zip(data.questions, targets, strict=True)]
    copies = [c for c in _clean_task_copies(surrogates, data, clean, config) if supports_states(c.adapter)]
    print(f"task {args.task}, {args.train} samples, preset {args.preset}, zoo {args.zoo_size}, seed {args.seed}; "
          f"per copy: mean |grad| of the answer loss, of the feature term, ratio (median over {args.batches} batches)")
    for n, copy in enumerate(copies):
        adapter = copy.adapter
        anchor = build_anchor(adapter, data.images, clean, config.batch_size)
        ratios, answer_sizes, term_sizes = [], [], []
        for b in range(args.batches):
            rows = list(range(b * config.batch_size, min(len(data.images), (b + 1) * config.batch_size)))
            deltas = [torch.zeros_like(data.images[i], requires_grad=True) for i in rows]
            images = [data.images[i] + d for i, d in zip(rows, deltas, strict=True)]
            with capture_layer_input(adapter, anchor.layer) as store:
                out = adapter.forward(images, [wanted[i] for i in rows])
            term = feature_term(pooled_image_states(store["hidden"], out.positions), anchor,
                                [clean[i].answer for i in rows], [wanted[i].answer for i in rows]).mean()
            answer_grad = torch.autograd.grad(out.loss.float().mean(), deltas, retain_graph=True)
            term_grad = torch.autograd.grad(term, deltas)
            answer_size = float(torch.stack([g.abs().mean() for g in answer_grad]).mean())
            term_size = float(torch.stack([g.abs().mean() for g in term_grad]).mean())
            answer_sizes.append(answer_size)
            term_sizes.append(term_size)
            ratios.append(answer_size / max(term_size, 1e-20))
        print(f"copy {n} ({copy.name}): answer {statistics.median(answer_sizes):.3e}, "
              f"feature {statistics.median(term_sizes):.3e}, ratio {statistics.median(ratios):.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
