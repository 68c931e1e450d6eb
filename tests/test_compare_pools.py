"""benchmarks/compare_pools.py reads what matrix_seeds.py writes and compares arms row by row."""

import json
import subprocess
import sys

from benchmarks.common import ROOT
from benchmarks.compare_pools import common_rows, read_rows, report, summarise
from tests.benchmark_helpers import matrix_run, pool_runs


def test_compare_pools_reads_matrix_seeds_tables_and_marks_every_miss(tmp_path):
    seeds = {0: {"white": 1.0, "idefics3": 0.9, "strip": 0.5}, 1: {"white": 1.0, "idefics3": 1.0, "strip": 0.7}}
    control = pool_runs(tmp_path / "control", [matrix_run(tmp_path, "control", s, p) for s, p in seeds.items()])
    better = {s: p | {"strip": p["strip"] + 0.3} for s, p in seeds.items()}
    arm = pool_runs(tmp_path / "arm", [matrix_run(tmp_path, "arm", s, p) for s, p in better.items()])

    rows = read_rows(control)["small"]
    assert rows["white-box `zoo:llava`"] == (1.0, 0.99, "meets")
    assert rows["black-box `zoo:idefics3`"] == (0.95, 0.95, "open")  # the pooled mean of 0.9 and 1.0
    assert rows["black-box `zoo:idefics3`, strip_vocab"] == (0.6, 0.85, "open")
    summary = summarise(rows)
    assert (summary.rows, summary.under, summary.lowest) == (3, 1, 0.6)
    assert summary.strippers == 0.6 and abs(summary.idefics3 - 0.775) < 1e-9
    assert summary.gemma3 is None  # no Gemma3 row in these runs: a dash, not a zero

    text = report([("control", read_rows(control)), ("arm", read_rows(arm))])
    # two seeds this far apart leave every interval open: none short beyond seed noise
    assert f"| control | 3 | 1 | 0.850 | 0.600 | {summary.idefics3:.2f} | – | 0.60 | 0 |" in text
    assert "| black-box `zoo:idefics3`, strip_vocab | **0.60** | 0.90 | ≥ 0.85 |" in text
    assert "`zoo:llava`" not in text.split("| row |")[1]  # rows every arm meets are left out


def test_sections_pick_one_arm_out_of_a_file_holding_several(tmp_path):
    doc = tmp_path / "screen.md"
    table = ("#### color@0.2, zoo `small`\n\n| row | protection, mean ± std | per protection seed (min – max) | runs "
             "| target |\n| --- | --- | --- | --- | --- |\n| white-box `zoo:llava` | {v} ± 0.00 | {v} – {v} | 1 | ≥ 0.99 |\n")
    doc.write_text("## control\n\n" + table.format(v="1.00") + "\n## momentum\n\n" + table.format(v="0.92"))
    assert read_rows(doc, "control")["small"]["white-box `zoo:llava`"][0] == 1.0
    assert read_rows(doc, "momentum")["small"]["white-box `zoo:llava`"][0] == 0.92
    assert read_rows(doc, "spread") == {}


def test_common_rows_set_a_reduced_screen_beside_a_complete_matrix(tmp_path):
    complete = pool_runs(tmp_path / "complete", [matrix_run(tmp_path, "complete", 0, {"white": 1.0, "idefics3": 0.9, "strip": 0.5})])
    screen_run = matrix_run(tmp_path, "screen", 0, {"white": 0.98, "idefics3": 0.9, "strip": 0.5})
    data = json.loads(screen_run.read_text())
    del data["tasks"]["color@0.2"]["threats"]["idefics3"]["conditions"]["strip_vocab"]  # the screen lacks a row
    screen_run.write_text(json.dumps(data))
    screen = pool_runs(tmp_path / "screen", [screen_run])
    arms = common_rows([("complete", read_rows(complete)), ("screen", read_rows(screen))])
    assert [sorted(tables["small"]) for _, tables in arms] == [["black-box `zoo:idefics3`", "white-box `zoo:llava`"]] * 2
    assert summarise(arms[0][1]["small"]).rows == 2  # the complete matrix's third row is left out
    text = report(arms, all_rows=True)
    assert "| black-box `zoo:idefics3` | 0.90 | 0.90 | ≥ 0.95 |" not in text  # 0.90 misses: bold
    assert "| black-box `zoo:idefics3` | **0.90** | **0.90** | ≥ 0.95 |" in text
    assert "| white-box `zoo:llava` | 1.00 | **0.98** | ≥ 0.99 |" in text
    assert "| complete | 2 | 1 | 0.950 | – | 0.90 | – | 0.90 | – |" in text  # one seed: no interval, no verdict


def test_intervals_over_seeds_tell_a_short_row_from_an_open_one(tmp_path):
    """matrix_seeds.py's 95 % interval over protection seeds and its verdict on the target; compare_pools
    counts and marks the rows short beyond seed noise."""
    seeds = {0: {"white": 1.0, "idefics3": 0.60, "strip": 0.80}, 1: {"white": 1.0, "idefics3": 0.62, "strip": 0.90},
             2: {"white": 1.0, "idefics3": 0.58, "strip": 0.85}, 3: {"white": 1.0, "idefics3": 0.60, "strip": 0.95}}
    table = pool_runs(tmp_path / "pool", [matrix_run(tmp_path, "run", s, p) for s, p in seeds.items()])
    text = table.read_text()
    # Idefics3: mean 0.60, sample std 0.0163 over 4 seeds, t(3) = 3.182: 0.60 +- 0.026, all of it under 0.95
    assert "| black-box `zoo:idefics3` | 0.60 ± 0.01 | 0.58 – 0.62 | 0.57 – 0.63 (short) | 4 (4 seeds) | ≥ 0.95 |" in text
    # the stripper row: mean 0.875 +- 0.103 straddles 0.85
    assert "| 0.77 – 0.98 (open) |" in text
    assert "| 1.00 – 1.00 (meets) |" in text
    rows = read_rows(table)["small"]
    assert summarise(rows).short == 1 and summarise(rows).under == 1
    assert "| black-box `zoo:idefics3` | **0.60** (short) | ≥ 0.95 |" in report([("pool", {"small": rows})])


def test_matrix_seeds_refuses_a_pooled_table_among_the_runs(tmp_path):
    """seed_matrix.sh leaves pooled.json beside the runs; a glob over the folder must not end in a traceback."""
    runs = [matrix_run(tmp_path, "run", s, {"white": 1.0, "idefics3": 0.9, "strip": 0.9}) for s in (0, 1)]
    pooled = pool_runs(tmp_path / "pooled", runs).with_suffix(".json")
    refused = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "matrix_seeds.py"), *map(str, runs),
                              str(pooled), "--out", str(tmp_path / "again")], capture_output=True, text=True)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"{pooled} is not one eval_matrix.py run" in refused.stderr
    assert not (tmp_path / "again.md").exists()
