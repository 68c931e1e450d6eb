"""Per-run accuracies of one attacker recipe row across eval_matrix.py runs, as a markdown table.

    .venv/bin/python benchmarks/recipe_runs.py --recipe lora "control=benchmarks/out/m/small-*.json" "arm=..."

A recipe row's protection is a ratio, 1 - (acc_protected - floor) / (acc_clean - floor): an attacker
whose clean-trained accuracy sits near the floor makes it say little whatever its value (docs/evaluation.md,
twenty-eighth session). This prints each run's clean- and protected-trained accuracy beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import protection_seed  # noqa: E402


def rows(name: str, pattern: str, recipe: str) -> list[str]:
    lines = []
    paths = sorted(Path().glob(pattern))
    if not paths:
        raise SystemExit(f"{name}: no file matches {pattern!r}")
    for path in paths:
        data = json.loads(path.read_text())
        seed = protection_seed(data["setup"])
        for task_name, task in data["tasks"].items():
            entry = task.get("recipes", {}).get(recipe)
            if entry is None:
                continue
            for run in entry["runs"]:
                verdict = "n/a (clean not above floor)" if run["protection"] is None else f"{run['protection']:.3f}"
                lines.append(f"| {name} | {task_name} | {entry['recipe']['lr']:g} | {seed} | {run['seed']} | "
                             f"{entry['floor']:.3f} | {run['acc_clean']:.3f} | {run['acc_protected']:.3f} | {verdict} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="+", metavar="NAME=GLOB")
    parser.add_argument("--recipe", default="lora")
    args = parser.parse_args(argv)
    print("| arm | task | lr | protection seed | victim seed | floor | clean-trained acc | protected-trained acc | protection |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for arm in args.arms:
        name, sep, pattern = arm.partition("=")
        if not sep:
            parser.error(f"{arm!r}: write NAME=GLOB")
        print("\n".join(rows(name, pattern, args.recipe)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
