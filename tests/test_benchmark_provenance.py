"""Benchmark runs record the code and the zoo weights that made them, and a pool of runs of different
code or weights says so."""

import json
import re
import subprocess
from pathlib import Path

from benchmarks.common import ROOT, code_state, describe_code, describe_zoo, zoo_state
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


def _run_file(folder: Path, seed: int, code: dict | None, zoo: dict | None = None) -> Path:
    data = json.loads(json.dumps(RUN_TEMPLATE))
    data["setup"]["set"] = [f"seed={seed}"]
    if code is not None:
        data["setup"]["code"] = code
    if zoo is not None:
        data["setup"]["zoo_state"] = zoo
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


def _checkpoint(cache: Path, name: str, weights: bytes) -> None:
    folder = cache / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)


def test_zoo_state_hashes_one_worlds_checkpoints_by_name_and_bytes(tmp_path):
    cache = tmp_path / "zoo"
    _checkpoint(cache, "small-seed0/llava", b"llava weights")
    _checkpoint(cache, "small-seed1/llava", b"gray-box weights")
    _checkpoint(cache, "small-fillers-seed0/llava", b"another world")
    state = zoo_state("small", cache)
    assert state["checkpoints"] == ["small-seed0/llava", "small-seed1/llava"]  # not the filler world's
    assert re.fullmatch(r"[0-9a-f]{16}", state["weights_sha256"]) and state["cpu"]
    assert zoo_state("small", cache) == state  # the same files: the same hash

    _checkpoint(cache, "small-seed1/llava", b"gray-box weights, rounded elsewhere")
    assert zoo_state("small", cache)["weights_sha256"] != state["weights_sha256"]
    assert zoo_state("small-fillers", cache)["checkpoints"] == ["small-fillers-seed0/llava"]
    assert zoo_state("tiny", cache) == {"weights_sha256": None, "checkpoints": [], "checkpoint_sha256": {},
                                        "cpu": state["cpu"]}
    # each checkpoint's own digest says which one moved when the world's hash did
    moved = zoo_state("small", cache)["checkpoint_sha256"]
    assert moved["small-seed0/llava"] == state["checkpoint_sha256"]["small-seed0/llava"]
    assert moved["small-seed1/llava"] != state["checkpoint_sha256"]["small-seed1/llava"]


def test_zoo_state_counts_only_the_checkpoints_a_run_used(tmp_path):
    cache = tmp_path / "zoo"
    _checkpoint(cache, "small-seed0/llava", b"llava weights")
    _checkpoint(cache, "small-seed1/llava", b"gray-box weights")
    used = ["llava", "zoo:llava@1"]
    before = zoo_state("small", cache, used=used)
    assert before == zoo_state("small", cache)  # all the cache holds was used: the unfiltered hash
    _checkpoint(cache, "small-seed0/llava_next", b"built for another run")
    assert zoo_state("small", cache, used=used) == before  # another run's family leaves this hash alone
    assert zoo_state("small", cache)["weights_sha256"] != before["weights_sha256"]
    assert zoo_state("small", cache, used=["llava_next"])["checkpoints"] == ["small-seed0/llava_next"]


def test_pool_names_its_zoo_weights_and_calls_out_runs_on_different_ones(tmp_path):
    cache = tmp_path / "zoo"
    _checkpoint(cache, "small-seed0/llava", b"llava weights")
    zoo = zoo_state("small", cache)
    code = code_state()
    same = _pool(tmp_path, _run_file(tmp_path, 0, code, zoo), _run_file(tmp_path, 1, code, zoo))
    assert f"Zoo weights: hash {zoo['weights_sha256']} over 1 checkpoint; CPU {zoo['cpu']}." in same

    other = zoo | {"weights_sha256": "f" * 16}
    mixed = _pool(tmp_path, _run_file(tmp_path, 0, code, zoo), _run_file(tmp_path, 1, code, other))
    assert f"**Zoo weights differ between the runs** (hashes {zoo['weights_sha256']}, {'f' * 16})" in mixed
    assert describe_zoo([None]).startswith("Zoo weights: not recorded")
