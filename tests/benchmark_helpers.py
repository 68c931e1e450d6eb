"""Shared by the benchmark tests: eval_matrix-shaped runs, pooled with the real benchmarks/matrix_seeds.py."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import ROOT


def pool_runs(out: Path, runs: list[Path]) -> Path:
    """matrix_seeds.py over `runs` into OUT.md / .json / .png; the markdown's path."""
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "matrix_seeds.py"), *map(str, runs), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    return out.parent / f"{out.name}.md"


def matrix_run(folder: Path, name: str, seed: int, protections: dict[str, float]) -> Path:
    """One eval_matrix-shaped run: the white-box and Idefics3 cells with the given protections."""
    def threat(threat_model: str, victim: str, conditions: dict[str, float]) -> dict:
        return {"threat": threat_model, "victim": victim,
                "conditions": {c: {"runs": [{"protection": p}]} for c, p in conditions.items()}}
    data = {
        "setup": {"zoo_size": "small", "preset": "strong", "ensemble": "llava,qwen2_vl", "seeds": str(seed),
                  "set": [f"seed={seed}"]},
        "tasks": {"color@0.2": {
            "report_summary": {"psnr_mean": 33.3},
            "threats": {
                "white": threat("white-box", "zoo:llava", {"none": protections["white"]}),
                "idefics3": threat("black-box", "zoo:idefics3", {"none": protections["idefics3"],
                                                                 "strip_vocab": protections["strip"]}),
            },
            "recipes": {},
        }},
    }
    path = folder / f"{name}-{seed}.json"
    path.write_text(json.dumps(data))
    return path
