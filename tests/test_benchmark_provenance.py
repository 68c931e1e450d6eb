"""Benchmark runs record the code that made them, and a pool of runs of different code says so."""

import json
import re
import subprocess
from pathlib import Path

from benchmarks.common import ROOT, code_state, describe_code
from tests.benchmark_helpers import pool_runs

RUN_TEMPLATE = {
    "setup": {"zoo_size": "small", "preset": "strong", "ensemble": "llava,qwen2_vl", "seeds": "0"},
    "tasks": {"color@0.2": {
        "report_summary": {"psnr_mean": 33.3},
        "threats": {"white-box zoo:llava": {"threat": "white-box", "victim": "zoo:llava", "conditions": {
            "none": {"runs": [{"protection": 1.0}]}}}},
        "recipes": {},
    }},
}


def test_code_state_names_commit_hash_and_packages():
    first, second = code_state(), code_state()
    assert re.fullmatch(r"[0-9a-f]{16}", first["source_sha256"])
    assert first["source_sha256"] == second["source_sha256"]  # same files read twice: same hash
    assert first["torch"] and first["transformers"]
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        assert head.startswith(first["commit"])
    line = describe_code(first | {"commit": "abc123", "uncommitted": ["mmguard_core/engine/protect.py"]})
    assert "commit abc123 with uncommitted changes to mmguard_core/engine/protect.py" in line
    assert first["source_sha256"] in line and f"transformers {first['transformers']}" in line


def _run_file(folder: Path, seed: int, code: dict | None) -> Path:
    data = json.loads(json.dumps(RUN_TEMPLATE))
    data["setup"]["set"] = [f"seed={seed}"]
    if code is not None:
        data["setup"]["code"] = code
    path = folder / f"run-{seed}.json"
    path.write_text(json.dumps(data))
    return path


def _pool(tmp_path: Path, *runs: Path) -> str:
    return pool_runs(tmp_path / "pooled", list(runs)).read_text()


def test_pool_of_one_code_names_it_and_mixed_code_is_called_out(tmp_path):
    code = code_state()
    same = _pool(tmp_path, _run_file(tmp_path, 0, code), _run_file(tmp_path, 1, code))
    assert describe_code(code) in same and "different code" not in same

    other = code | {"source_sha256": "0" * 16, "uncommitted": ["mmguard_core/engine/triggers.py"]}
    mixed = _pool(tmp_path, _run_file(tmp_path, 0, code), _run_file(tmp_path, 1, other), _run_file(tmp_path, 2, None))
    assert "**The runs were made by different code**" in mixed
    assert f"- protection seeds [0]: {describe_code(code)}" in mixed
    assert "- protection seeds [1]: " in mixed and "mmguard_core/engine/triggers.py" in mixed
    assert "- protection seeds [2]: Code: not recorded" in mixed
