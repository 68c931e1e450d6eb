"""Shared by the benchmark tests: pool eval_matrix-shaped runs with the real benchmarks/matrix_seeds.py."""

import subprocess
import sys
from pathlib import Path

from benchmarks.common import ROOT


def pool_runs(out: Path, runs: list[Path]) -> Path:
    """matrix_seeds.py over `runs` into OUT.md / .json / .png; the markdown's path."""
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "matrix_seeds.py"), *map(str, runs), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    return out.parent / f"{out.name}.md"
