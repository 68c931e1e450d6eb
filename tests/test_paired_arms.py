"""benchmarks/paired_arms.py pairs two arms' runs by protection seed and judges each row's difference."""

import json
import subprocess
import sys

from benchmarks.common import ROOT
from benchmarks.paired_arms import compare, seed_means
from tests.benchmark_helpers import matrix_run


def test_seed_pairing_sees_a_steady_gain_that_unpaired_means_would_drown(tmp_path):
    # the seeds move Idefics3 by 0.4 while the arm adds 0.05 on every seed: paired, a gain
    base = {0: 0.5, 1: 0.9, 2: 0.6, 3: 0.8}
    control, arm = tmp_path / "control", tmp_path / "arm"
    control.mkdir(), arm.mkdir()
    for seed, value in base.items():
        matrix_run(control, "run", seed, {"white": 1.0, "idefics3": value, "strip": 0.7})
        matrix_run(arm, "run", seed, {"white": 1.0, "idefics3": value + 0.05, "strip": 0.7 + 0.1 * (-1) ** seed})
    matrix_run(arm, "run", 9, {"white": 0.0, "idefics3": 0.0, "strip": 0.0})  # a seed the control lacks: left out
    text = "\n".join(compare(seed_means(sorted(control.glob("*.json"))), seed_means(sorted(arm.glob("*.json")))))
    assert "| black-box `zoo:idefics3` | 0.700 | 0.750 | +0.050 | +0.050 – +0.050 | 4 | gain |" in text
    # +0.1 and -0.1 in turn: the interval holds 0
    assert "| black-box `zoo:idefics3`, strip_vocab | 0.700 | 0.700 | +0.000 |" in text and "| 4 | level |" in text
    assert "| white-box `zoo:llava` | 1.000 | 1.000 | +0.000 | +0.000 – +0.000 | 4 | level |" in text


def test_the_command_line_names_a_glob_that_matches_nothing(tmp_path):
    path = matrix_run(tmp_path, "run", 0, {"white": 1.0, "idefics3": 0.9, "strip": 0.5})
    data = json.loads(path.read_text())
    assert data["setup"]["zoo_size"] == "small"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paired_arms.py"), str(path),
                             str(tmp_path / "missing-*.json")], capture_output=True, text=True)
    assert result.returncode == 2 and "arm: no file matches" in result.stderr and "Traceback" not in result.stderr
    single = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paired_arms.py"), str(path), str(path)],
                            capture_output=True, text=True, check=True)
    assert "| black-box `zoo:idefics3` | 0.900 | 0.900 | +0.000 | – | 1 | one seed |" in single.stdout
