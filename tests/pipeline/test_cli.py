"""`mmguard remote ...` as scripts use it: against the embedded server, with its exit codes."""

from __future__ import annotations

import json
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest
from service.helpers import TINY_CONFIG, VENV_BIN, dataset_folder

pytestmark = pytest.mark.slow


def remote(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "mmguard"), "remote", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def cli_env(embedded: dict) -> dict[str, str]:
    return {**embedded["env"], "MMGUARD_URL": embedded["url"], "MMGUARD_API_KEY": embedded["key"]}


def test_submit_folder_wait_download(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = dataset_folder(tmp_path / "my-dataset", n=4)
    out = tmp_path / "protected.zip"
    key = f"cli-{uuid.uuid4()}"
    args = ["submit", str(folder), "--preset", "fast", "--config", json.dumps(TINY_CONFIG), "--wait",
            "--out", str(out), "--json", "--idempotency-key", key]
    result = remote(args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded"
    assert zipfile.is_zipfile(out)
    # not a terminal: plain progress lines, no carriage returns
    assert "\r" not in result.stderr and "upload:" in result.stderr and f"job {job['id']}: succeeded" in result.stderr

    # the same command again (e.g. a pipeline step re-run): the same job, nothing new
    again = remote(args, cli_env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == job["id"] and "[replayed]" in again.stderr

    status = remote(["status", job["id"]], cli_env, tmp_path)
    assert status.returncode == 0 and status.stdout.startswith(f"{job['id']}\tsucceeded")
    download = remote(["download", job["id"], "--out", str(tmp_path / "again.zip")], cli_env, tmp_path)
    assert download.returncode == 0 and (tmp_path / "again.zip").read_bytes() == out.read_bytes()


def test_exit_codes(cli_env: dict[str, str], embedded: dict, tiny_zip: Path, tmp_path: Path) -> None:
    # 3: the job was cancelled (a long job, cancelled right away)
    submitted = remote(["submit", str(tiny_zip), "--config", json.dumps({**TINY_CONFIG, "shared_steps": 5000}),
                        "--json"], cli_env, tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    assert remote(["cancel", job_id], cli_env, tmp_path).returncode == 0
    waited = remote(["wait", job_id, "--timeout", "120"], cli_env, tmp_path)
    assert waited.returncode == 3, waited.stderr
    assert remote(["status", job_id], cli_env, tmp_path).returncode == 3
    # 2: usage and refused input
    assert remote(["status", str(uuid.uuid4())], cli_env, tmp_path).returncode == 2
    assert remote(["submit", str(tmp_path / "missing.zip")], cli_env, tmp_path).returncode == 2
    refused = remote(["submit", str(tiny_zip), "--config", '{"no_such_field": 1}'], cli_env, tmp_path)
    assert refused.returncode == 2 and "mmguard: config: unknown field(s) no_such_field" in refused.stderr
    # 4: a wrong key
    bad = remote(["status", job_id, "--key", "mmg_000000000000_nope"], cli_env, tmp_path)
    assert bad.returncode == 4 and "authentication" in bad.stderr
    # 5: nothing listening
    env = {**cli_env, "MMGUARD_URL": "http://127.0.0.1:9"}
    assert remote(["status", job_id], env, tmp_path).returncode == 5
