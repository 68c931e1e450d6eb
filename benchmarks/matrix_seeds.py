"""Pool several eval_matrix.py runs that differ only in the protection seed into one table.

    .venv/bin/python benchmarks/matrix_seeds.py RUN.json [RUN.json ...] --out benchmarks/out/matrix_seeds

One eval_matrix run protects each task once; which trigger words and noise that one protection drew
moves a cell by up to ±0.3 (docs/evaluation.md). Run eval_matrix.py once per protection seed
(`--set seed=N`, same everything else) and pass the JSON files here: every cell becomes the mean ±
population std over all (protection seed × victim seed) runs, with the range of the per-protection-seed
means beside it, and the 95 % interval of the mean over protection seeds (Student's t over the
per-seed means: each seed draws the protection and, by default, the victim anew) with its verdict
against the row's target: `meets` (the interval's low end reaches it), `short` (its high end does not),
`open` (the seeds cannot tell). Runs are grouped by (zoo size, task); a run that stopped early adds what it finished.
Writes OUT.md, OUT.json and OUT.png (matplotlib: one panel per zoo world and task, bars = pooled mean,
whiskers = range of the per-protection-seed means).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import describe_code, describe_zoo, output_file, protection_seed  # noqa: E402

TARGETS = {"white-box": 0.99, "gray-box": 0.95, "black-box": 0.95}
# two-sided 95 % quantiles of Student's t by degrees of freedom (no scipy in the environment); beyond
# the table the normal 1.96 (within 2 % of t from 31 degrees of freedom on)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
       18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}


def cell_runs(entry: dict, seed: int) -> list[tuple[int, float]]:
    return [(seed, r["protection"]) for r in entry["runs"] if r["protection"] is not None]


def pool(files: list[Path]) -> dict:
    """{(zoo, task): {"rows": {row label: [(protection seed, protection), ...]}, "seeds", "victim_seeds",
    "psnr", "preset", "ensemble"}}; two runs of one (zoo, task, protection seed) are refused (they
    would count twice)."""
    groups: dict[tuple[str, str], dict] = {}
    seen: dict[tuple[str, str, int], Path] = {}
    for path in files:
        data = json.loads(path.read_text())
        if "setup" not in data or "tasks" not in data:
            # seed_matrix.sh writes its own pooled.json beside the runs; a glob over the folder takes it too
            raise SystemExit(f"{path} is not one eval_matrix.py run (no setup / tasks): pass the per-seed "
                             "JSON files, not a pooled table")
        setup = data["setup"]
        seed = protection_seed(setup)
        for task, rows in data["tasks"].items():
            key = (setup["zoo_size"], task, seed)
            if key in seen:
                raise SystemExit(f"{path} and {seen[key]} both hold zoo {key[0]}, task {key[1]}, protection "
                                 f"seed {seed}: pass one of them")
            seen[key] = path
            group = groups.setdefault((setup["zoo_size"], task), {"rows": {}, "seeds": set(), "psnr": [],
                                                                   "preset": setup["preset"],
                                                                   "victim_seeds": set(),
                                                                   "ensemble": setup["ensemble"], "code": {},
                                                                   "zoo": []})
            group["seeds"].add(seed)
            group["zoo"].append(setup.get("zoo_state"))
            code = setup.get("code")
            group["code"].setdefault(code["source_sha256"] if code else None, (code, []))[1].append(seed)
            group["victim_seeds"].update(int(v) for v in str(setup["seeds"]).split(","))
            group["psnr"].append(rows["report_summary"]["psnr_mean"])
            for result in rows["threats"].values():
                label = f"{result['threat']} `{result['victim']}`"
                for key, condition in result["conditions"].items():
                    row = label if key == "none" else f"{label}, {key}"
                    group["rows"].setdefault(row, []).extend(cell_runs(condition, seed))
            for name, result in rows["recipes"].items():
                group["rows"].setdefault(f"recipe {name} (white-box)", []).extend(cell_runs(result, seed))
    return groups


def code_lines(codes: dict) -> list[str]:
    """The code that made the pooled runs; more than one state is called out, since pooled seeds of
    different code are not draws of one method."""
    if len(codes) == 1:
        (code, _), = codes.values()
        return [describe_code(code), ""]
    lines = ["**The runs were made by different code** (the pool mixes methods):"]
    lines += [f"- protection seeds {sorted(seeds)}: {describe_code(code)}" for code, seeds in codes.values()]
    return [*lines, ""]


def per_seed_means(values: list[tuple[int, float]]) -> dict[int, float]:
    """{protection seed: mean protection over that seed's victim runs}."""
    by_seed: dict[int, list[float]] = {}
    for seed, v in values:
        by_seed.setdefault(seed, []).append(v)
    return {seed: sum(v) / len(v) for seed, v in by_seed.items()}


def summarise(values: list[tuple[int, float]]) -> dict:
    scores = [v for _, v in values]
    means = list(per_seed_means(values).values())
    return {"n": len(scores), "mean": statistics.fmean(scores), "std": statistics.pstdev(scores),
            "seed_min": min(means), "seed_max": max(means), "protect_seeds": len(means),
            "interval": seed_interval(means)}


def seed_interval(seed_means: list[float]) -> tuple[float, float] | None:
    """95 % interval of the mean over protection seeds (None for a single seed: no spread to go by)."""
    if len(seed_means) < 2:
        return None
    df = len(seed_means) - 1
    t = T95[max(k for k in T95 if k <= df)] if df <= max(T95) else 1.96
    half = t * statistics.stdev(seed_means) / len(seed_means) ** 0.5
    centre = statistics.fmean(seed_means)
    return centre - half, centre + half


def interval_text(interval: tuple[float, float] | None, target: float | None) -> str:
    """'0.86 – 0.99 (open)': the interval, capped at 1 as protection is, and its verdict on the target."""
    if interval is None:
        return "–"
    low, high = interval
    text = f"{low:.2f} – {min(high, 1.0):.2f}"
    if target is None:
        return text
    verdict = "meets" if low >= target else "short" if high < target else "open"
    return f"{text} ({verdict})"


def row_target(row: str, threat: str) -> float | None:
    """Issue 5's target for a pooled row (None: clean data mixed in, which has none)."""
    if row.startswith("recipe"):
        return TARGETS["white-box"]  # an attacker recipe on the white-box family
    if row.endswith("%"):
        return None
    if "," in row:
        return 0.7 if row.endswith(", iss") else 0.85  # a countermeasure
    return TARGETS[threat.split(" (")[0]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/matrix_seeds"))
    args = parser.parse_args()
    groups = pool(args.runs)
    table: dict = {}
    lines = [f"Pooled from {len(args.runs)} eval_matrix runs: `benchmarks/matrix_seeds.py "
             f"{' '.join(p.name for p in args.runs)}`", ""]
    for (zoo, task), group in sorted(groups.items()):
        seeds = sorted(group["seeds"])
        lines += [f"### {task}, zoo `{zoo}`", "",
                  f"Preset `{group['preset']}`, ensemble {group['ensemble']}, protection seeds {seeds}, victim "
                  f"seeds {sorted(group['victim_seeds'])}; PSNR {min(group['psnr']):.1f}–{max(group['psnr']):.1f} dB.", "",
                  *code_lines(group["code"]), describe_zoo(group["zoo"]), "",
                  "| row | protection, mean ± std | per protection seed (min – max) | 95 % interval over seeds "
                  "| runs | target |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row, values in group["rows"].items():
            if not values:
                lines.append(f"| {row} | n/a (no verdict) | | | 0 | |")
                continue
            s = summarise(values)
            table.setdefault(f"{zoo}/{task}", {})[row] = s
            threat = row.split(" `")[0]
            target = row_target(row, threat)
            target_text = "–" if target is None else f"≥ {target}"
            lines.append(f"| {row} | {s['mean']:.2f} ± {s['std']:.2f} | {s['seed_min']:.2f} – {s['seed_max']:.2f} "
                         f"| {interval_text(s['interval'], target)} | {s['n']} ({s['protect_seeds']} seeds) "
                         f"| {target_text} |")
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    output_file(args.out, ".md").write_text("\n".join(lines) + "\n")
    output_file(args.out, ".json").write_text(json.dumps(table, indent=2))
    try:
        plot(table, output_file(args.out, ".png"))
    except ImportError:
        print("matplotlib missing (pip install -e '.[dev]'): no plot", file=sys.stderr)
    print("\n".join(lines))
    return 0


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(table), 1, figsize=(16, 4.2 * len(table)), squeeze=False)
    for ax, (group, rows) in zip(axes[:, 0], sorted(table.items()), strict=True):
        labels = list(rows)
        means = [rows[k]["mean"] for k in labels]
        low = [rows[k]["mean"] - rows[k]["seed_min"] for k in labels]
        high = [rows[k]["seed_max"] - rows[k]["mean"] for k in labels]
        colours = ["tab:blue" if "," not in k and not k.startswith("recipe") else
                   "tab:green" if k.startswith("recipe") else "tab:orange" for k in labels]
        ax.bar(range(len(labels)), means, yerr=[low, high], capsize=2, color=colours)
        ax.set_xticks(range(len(labels)), [k.replace("`", "") for k in labels], rotation=60, ha="right", fontsize=6)
        ax.set_ylim(min(0.0, *means) - 0.05, 1.05)
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{group}: protection pooled over protection seeds (whiskers: per-seed range)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
