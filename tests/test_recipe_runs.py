"""benchmarks/recipe_runs.py lists one recipe row's runs with the accuracies behind each protection."""

import json

import pytest

from benchmarks.recipe_runs import main


def _run(folder, seed: int, runs: list[dict]) -> None:
    data = {"setup": {"set": [f"seed={seed}"]},
            "tasks": {"color@0.2": {"recipes": {"lora": {"recipe": {"lr": 0.003}, "floor": 0.2, "runs": runs}}}}}
    (folder / f"small-{seed}.json").write_text(json.dumps(data))


def test_recipe_runs_prints_each_runs_accuracies_and_calls_a_floor_run_no_verdict(tmp_path, capsys, monkeypatch):
    _run(tmp_path, 3, [{"seed": 3, "acc_clean": 0.66, "acc_protected": 0.1, "protection": 1.0}])
    _run(tmp_path, 4, [{"seed": 4, "acc_clean": 0.11, "acc_protected": 0.3, "protection": None}])
    monkeypatch.chdir(tmp_path)
    assert main(["arm=small-*.json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| arm | color@0.2 | 0.003 | 3 | 3 | 0.200 | 0.660 | 0.100 | 1.000 |"
    assert lines[3].startswith("| arm | color@0.2 | 0.003 | 4 | 4 | 0.200 | 0.110 | 0.300 | n/a")
    with pytest.raises(SystemExit, match="no file matches"):
        main(["arm=nothing-*.json"])
