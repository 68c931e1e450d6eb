"""Two arms of a screen compared seed by seed: per matrix row, the arm's protection minus the control's
on the same protection seed, with the 95 % interval of that difference over the seeds.

    .venv/bin/python benchmarks/paired_arms.py "benchmarks/out/control/small-*.json" "benchmarks/out/arm/small-*.json"

Pooled means (compare_pools.py) set two arms side by side, but a protection seed moves a row by up to
±0.3 while a lever moves it by a few hundredths, so unpaired means of six seeds cannot tell most levers
apart (docs/evaluation.md: the "trades" between Gemma3 and Idefics3). Both arms of a screen run the same
protection and victim seeds; the seed-by-seed difference removes what the seed draws alike in both. A
row's verdict: `gain` (the interval lies above 0), `loss` (below 0), `level` (it holds 0). Only seeds
both arms hold count; each run file is one eval_matrix.py process (`--set seed=N`).
"""

from __future__ import annotations

import argparse
import glob
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.matrix_seeds import per_seed_means, pool, seed_interval  # noqa: E402


def seed_means(files: list[Path]) -> dict[tuple[str, str], dict[str, dict[int, float]]]:
    """{(zoo, task): {row: {protection seed: mean protection over that seed's victim runs}}}."""
    out: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for key, group in pool(files).items():
        rows = out.setdefault(key, {})
        for row, values in group["rows"].items():
            rows[row] = per_seed_means(values)
    return out


def compare(control: dict, arm: dict) -> list[str]:
    lines = []
    for key in sorted(set(control) & set(arm)):
        zoo, task = key
        lines += [f"### {task}, zoo `{zoo}`", "",
                  "| row | control | arm | arm − control, mean | 95 % interval | seeds | verdict |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row, by_seed in control[key].items():
            other = arm[key].get(row, {})
            seeds = sorted(set(by_seed) & set(other))
            if not seeds:
                continue
            differences = [other[s] - by_seed[s] for s in seeds]
            interval = seed_interval(differences)
            if interval is None:
                span, verdict = "–", "one seed"
            else:
                span = f"{interval[0]:+.3f} – {interval[1]:+.3f}"
                verdict = "gain" if interval[0] > 0 else "loss" if interval[1] < 0 else "level"
            lines.append(f"| {row} | {statistics.fmean(by_seed[s] for s in seeds):.3f} | "
                         f"{statistics.fmean(other[s] for s in seeds):.3f} | {statistics.fmean(differences):+.3f} | "
                         f"{span} | {len(seeds)} | {verdict} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("control", help="glob of the control's eval_matrix JSON files")
    parser.add_argument("arm", help="glob of the arm's eval_matrix JSON files")
    args = parser.parse_args(argv)
    found = []
    for name, pattern in (("control", args.control), ("arm", args.arm)):
        files = sorted(Path(match) for match in glob.glob(pattern))
        if not files:
            parser.error(f"{name}: no file matches {pattern!r}")
        found.append(seed_means(files))
    lines = compare(*found)
    if not lines:
        parser.error("the two arms share no (zoo, task)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
