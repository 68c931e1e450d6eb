"""benchmarks/attacker_lr.py: the clean-task accuracy an attacker's recipe reaches, per learning rate."""

import json

import pytest

from benchmarks.attacker_lr import main


def test_attacker_lr_reports_one_clean_run_per_rate_and_seed(tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["--victim", "zoo:llava", "--zoo-size", "test", "--train", "32", "--test", "16", "--recipe", "lora",
                 "--lrs", "0.01,0.001", "--epochs", "1", "--seeds", "0,1", "--out", str(out)]) == 0
    data = json.loads((tmp_path / "lr.json").read_text())
    assert [(r["lr"], r["seed"]) for r in data["runs"]] == [(0.01, 0), (0.01, 1), (0.001, 0), (0.001, 1)]
    assert all(0.0 <= r["acc_clean"] <= 1.0 and r["final_loss"] > 0 for r in data["runs"])
    assert 0 < data["setup"]["floor"] <= 1 and data["setup"]["zoo_state"]["weights_sha256"]
    table = (tmp_path / "lr.md").read_text()
    assert "| 0.01 | 1 |" in table and "| 0.001 | 1 |" in table
    printed = capsys.readouterr().out
    assert printed.count("clean accuracy ") == 4 and "(floor " in printed


def test_attacker_lr_refuses_a_victim_outside_the_zoo(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--victim", "llava:/nowhere"])
    assert stop.value.code == 2 and "zoo:FAMILY" in capsys.readouterr().err
