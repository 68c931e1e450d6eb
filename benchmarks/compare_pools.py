"""Compare pooled matrix tables (benchmarks/matrix_seeds.py's markdown) arm by arm, per zoo world.

    .venv/bin/python benchmarks/compare_pools.py control=docs/evaluation_screen16.md#control \
        pairs=docs/evaluation_screen16.md#pairs anchored=OUT/pool-small.md

Each argument is NAME=FILE, optionally #SECTION: only the rows under `## ` headings that start with
SECTION (a docs file holding several arms). Prints, per world, a summary line per arm over the rows
with a target (rows under target, their mean, the word-stripper rows' mean, the Idefics3 rows' mean
and the Gemma3 rows' mean — the held-out families furthest from their targets in turn —, the lowest
row, and how many rows are short of their target beyond seed noise: their 95 % interval over
protection seeds ends below it; "–" for a table written before matrix_seeds.py gave intervals) and every row where some arm misses its target (`--all-rows`: every row). `--common` keeps only
the rows every arm holds, to set a reduced screen beside a complete matrix. Tables in the docs are made
with it, not typed: a number in a comparison is the number in the pooled table.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

# | row | mean ± std | min – max | runs | ≥ target |   (rows without a target, the clean-data mixes, end in "–")
ROW = re.compile(r"^\| (.+?) \| (-?[0-9.]+) ± [0-9.]+ \| .*\| ≥ ([0-9.]+) \|$")
WORLD = re.compile(r"^#+ .*zoo `([^`]+)`")
VERDICT = re.compile(r"\| [0-9.-]+ – [0-9.]+ \((meets|short|open)\) \|")


@dataclass(frozen=True)
class Summary:
    rows: int
    under: int
    mean: float
    strippers: float | None
    idefics3: float | None
    gemma3: float | None
    lowest: float
    short: int | None  # rows short of target beyond seed noise; None: the table has no intervals


Cell = tuple[float, float, str | None]  # pooled mean, target, interval verdict (None: not in the table)


def read_rows(path: Path, section: str | None = None) -> dict[str, dict[str, Cell]]:
    """{zoo world: {row: (pooled mean, target, verdict)}} from a pooled table, or from the `## SECTION...`
    parts of a file holding several."""
    rows: dict[str, dict[str, Cell]] = {}
    world, active = None, section is None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            active = section is None or line[3:].startswith(section)
        if heading := WORLD.match(line):
            world = heading.group(1)
        if (row := ROW.match(line.strip())) and active and world:
            verdict = VERDICT.search(line)
            rows.setdefault(world, {})[row.group(1)] = (float(row.group(2)), float(row.group(3)),
                                                        verdict.group(1) if verdict else None)
    return rows


def _mean_of(rows: dict[str, Cell], word: str) -> float | None:
    """The mean of the rows whose name holds `word` (None when none does)."""
    values = [mean for row, (mean, _, _) in rows.items() if word in row]
    return sum(values) / len(values) if values else None


def summarise(rows: dict[str, Cell]) -> Summary:
    means = [mean for mean, _, _ in rows.values()]
    verdicts = [verdict for _, _, verdict in rows.values()]
    return Summary(
        rows=len(rows),
        under=sum(mean < target for mean, target, _ in rows.values()),
        mean=sum(means) / len(means),
        strippers=_mean_of(rows, "strip_"),
        idefics3=_mean_of(rows, "idefics3"),
        gemma3=_mean_of(rows, "gemma3"),
        lowest=min(means),
        short=None if None in verdicts else verdicts.count("short"),
    )


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


Tables = dict[str, dict[str, Cell]]


def common_rows(arms: list[tuple[str, Tables]]) -> list[tuple[str, Tables]]:
    """Each arm cut to the rows, per world, that every arm holding that world holds."""
    shared: dict[str, set[str]] = {}
    for _, tables in arms:
        for world, rows in tables.items():
            shared[world] = shared[world] & set(rows) if world in shared else set(rows)
    return [(name, {world: {row: cell for row, cell in rows.items() if row in shared[world]}
                    for world, rows in tables.items()}) for name, tables in arms]


def _cell_text(cell: Cell | None) -> str:
    """A row's pooled mean: bold under its target, "(short)" when short beyond seed noise."""
    if cell is None:
        return "–"
    mean, target, verdict = cell
    text = f"**{mean:.2f}**" if mean < target else f"{mean:.2f}"
    return f"{text} (short)" if verdict == "short" else text


def report(arms: list[tuple[str, Tables]], all_rows: bool = False) -> str:
    worlds = list(dict.fromkeys(world for _, tables in arms for world in tables))
    lines = []
    for world in worlds:
        lines += [f"#### zoo `{world}`", "",
                  "| arm | rows with a target | under target | mean | strippers | Idefics3 | Gemma3 | lowest "
                  "| short beyond seed noise |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, tables in arms:
            if world in tables:
                s = summarise(tables[world])
                lines.append(f"| {name} | {s.rows} | {s.under} | {s.mean:.3f} | {_fmt(s.strippers, 3)} | "
                             f"{_fmt(s.idefics3, 2)} | {_fmt(s.gemma3, 2)} | {s.lowest:.2f} | "
                             f"{'–' if s.short is None else s.short} |")
        lines += ["", "| row | " + " | ".join(name for name, _ in arms) + " | target |",
                  "| --- |" + " --- |" * (len(arms) + 1)]
        row_names = list(dict.fromkeys(row for _, tables in arms for row in tables.get(world, {})))
        for row in row_names:
            cells = [tables.get(world, {}).get(row) for _, tables in arms]
            if all_rows or any(cell and cell[0] < cell[1] for cell in cells):
                target = next(cell[1] for cell in cells if cell)
                shown = [_cell_text(cell) for cell in cells]
                lines.append(f"| {row} | " + " | ".join(shown) + f" | ≥ {target:.2f} |")
        lines.append("")
    return "\n".join(lines)


def parse_arm(spec: str) -> tuple[str, Path, str | None]:
    name, sep, where = spec.partition("=")
    if not sep or not name or not where:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected NAME=FILE or NAME=FILE#SECTION")
    path, _, section = where.partition("#")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    return name, Path(path), section or None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="+", type=parse_arm, metavar="NAME=FILE[#SECTION]")
    parser.add_argument("--common", action="store_true", help="only the rows every arm holds (per world)")
    parser.add_argument("--all-rows", action="store_true", help="list every row, not only those some arm misses")
    args = parser.parse_args(argv)
    arms = []
    for name, path, section in args.arms:
        tables = read_rows(path, section)
        if not tables:
            parser.error(f"{name}: no pooled rows in {path}" + (f" under '## {section}'" if section else ""))
        arms.append((name, tables))
    print(report(common_rows(arms) if args.common else arms, all_rows=args.all_rows))


if __name__ == "__main__":
    main()
