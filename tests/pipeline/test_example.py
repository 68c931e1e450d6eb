"""docs/pipelines.md's worked example, run as written: the shell script protects a folder through the
embedded server and publishes it (twice: the re-run reuses the job), then the Python snippet loads the
published copy with `datasets`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from service.helpers import REPO, TINY_CONFIG, VENV_BIN, dataset_folder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("jq") and shutil.which("unzip")), reason="the example uses jq and unzip"),
]


def test_protect_and_publish_script_and_datasets_snippet(embedded: dict, tmp_path: Path) -> None:
    folder = dataset_folder(tmp_path / "my-dataset", n=4)
    env = {**embedded["env"], "MMGUARD_URL": embedded["url"], "MMGUARD_API_KEY": embedded["key"],
           "PRESET": "fast", "CONFIG": json.dumps(TINY_CONFIG),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = REPO / "docs" / "examples" / "protect-and-publish.sh"
    runs = [subprocess.run(["bash", str(script), str(folder), str(tmp_path / "published")], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "published" in run.stdout
    job_ids = {re.search(r"\(job ([0-9a-f-]+)\)", run.stdout).group(1) for run in runs}
    assert len(job_ids) == 1  # the second run was answered from the first (same Idempotency-Key)
    published = tmp_path / "published"
    assert (published / "data.jsonl").is_file() and (tmp_path / "published.report.json").is_file()

    doc = (REPO / "docs" / "pipelines.md").read_text()
    snippet = re.search(r"Load the published copy.*?```python\n(.*?)```", doc, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads((published / "data.jsonl").read_text().splitlines()[0])
    assert first["question"] in result.stdout and "(32, 32)" in result.stdout
