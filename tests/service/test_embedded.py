"""The embedded default: `mmguard serve --data-dir D` with no other configuration (SQLite, local
storage, a filesystem queue and a worker child running the same Celery task code)."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from .flow import full_flow, poll, start_job, upload
from .helpers import (
    TINY_CONFIG,
    VENV_BIN,
    Proc,
    free_port,
    maps_torch,
    pool_children,
    start_embedded,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    proc, info = start_embedded(tmp_path_factory.mktemp("embedded"))
    workers = info["workers"]
    try:
        yield {**info, "base": f"{info['origin']}/api/v1"}
        # `serve` stops its worker child itself on SIGTERM
        proc.popen.send_signal(signal.SIGTERM)
        proc.popen.wait(40)
        assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers), proc.output()[-3000:]
    finally:
        proc.stop()


def test_first_start_prints_url_and_key(embedded: dict) -> None:
    out = embedded["proc"].output()
    assert f"mmguard is serving at {embedded['base']}" in out
    key = re.search(r"^(mmg_\w+_\S+)$", out, re.M)
    assert key, out
    saved = (embedded["data_dir"] / "local-api-key")
    assert saved.read_text().strip() == key.group(1) and oct(saved.stat().st_mode & 0o777) == "0o600"
    assert (embedded["data_dir"] / "mmguard.db").is_file()
    with sqlite3.connect(embedded["data_dir"] / "mmguard.db") as db:
        assert db.execute("select name from owners").fetchall() == [("local",)]
    assert httpx.get(f"{embedded['base']}/health").json()["broker"] == "ok"


def test_embedded_flow_end_to_end(embedded: dict, tiny_zip: Path, tmp_path: Path) -> None:
    key = (embedded["data_dir"] / "local-api-key").read_text().strip()
    full_flow(embedded["base"], key, tiny_zip, TINY_CONFIG, tmp_path)


def test_admin_create_key_uses_the_same_data_dir(embedded: dict) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "mmguard"), "admin", "create-key", "--owner", "bob", "--data-dir", str(embedded["data_dir"])],
        env=embedded["env"], capture_output=True, text=True, timeout=120, cwd=embedded["root"],
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert result.stdout == key + "\n" and re.fullmatch(r"mmg_[0-9a-f]{12}_\S{43,}", key)
    response = httpx.get(f"{embedded['base']}/datasets", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.json() == {"data": [], "count": 0}


def test_restart_does_not_print_a_new_key(embedded: dict, tmp_path: Path) -> None:
    """A second `serve` on the same data dir (another port) finds the owner and prints no new key."""
    port = free_port()
    proc = Proc([str(VENV_BIN / "mmguard"), "serve", "--port", str(port), "--data-dir", str(embedded["data_dir"]),
                 "--no-worker"], embedded["env"], tmp_path / "serve2.log", cwd=tmp_path)
    try:
        wait_for(lambda: "mmguard is serving" in proc.output() or not proc.alive(), 60, 0.2, "second serve")
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200
                 if proc.alive() else True, 60, 0.3, "second serve health")
        out = proc.output()
        assert proc.alive(), out
        assert not re.search(r"^mmg_", out, re.M) and "see " in out and "local-api-key" in out
        assert not pool_children(proc.popen.pid)  # --no-worker
    finally:
        proc.stop()


def test_mmguard_worker_command_keeps_torch_out_of_the_parent(embedded: dict) -> None:
    """`mmguard worker` re-executes as `celery -A worker worker`: the parent never maps libtorch."""
    proc = Proc([str(VENV_BIN / "mmguard"), "worker", "--data-dir", str(embedded["data_dir"])],
                embedded["env"], embedded["root"] / "worker-cmd.log", cwd=embedded["root"])
    try:
        wait_for(lambda: " ready." in proc.output() or not proc.alive(), 120, 0.2, "mmguard worker")
        assert proc.alive(), proc.output()[-3000:]
        assert "celery" in Path(f"/proc/{proc.popen.pid}/cmdline").read_bytes().decode(errors="replace")
        assert not maps_torch(proc.popen.pid)
        wait_for(lambda: pool_children(proc.popen.pid) and all(maps_torch(c) for c in pool_children(proc.popen.pid)),
                 120, 0.5, "the engine preloaded in the pool child")
    finally:
        proc.stop()


def test_a_queued_job_whose_message_was_lost_runs_when_a_worker_starts(tmp_path: Path, tiny_zip: Path) -> None:
    """A worker killed hard after taking a job's message from the embedded queue takes the message
    with it; the job stays `queued`. The next worker to start re-sends queued jobs."""
    serve, info = start_embedded(tmp_path, serve_args=["--no-worker"])
    worker = None
    try:
        base, key = f"{info['origin']}/api/v1", info["key"]
        job = start_job(base, key, upload(base, key, tiny_zip)["id"], TINY_CONFIG)
        sent = [path for path in (info["data_dir"] / "queue" / "messages").iterdir() if path.name.endswith(".msg")]
        assert len(sent) == 1
        sent[0].unlink()  # the message is gone, as with a worker killed right after taking it
        worker = Proc([str(VENV_BIN / "mmguard"), "worker", "--data-dir", str(info["data_dir"])], info["env"],
                      tmp_path / "worker.log", cwd=tmp_path)
        final = poll(base, key, job["id"], {"succeeded", "failed"}, timeout=240, interval=0.5)
        assert final["status"] == "succeeded", (final, worker.output()[-3000:])
    finally:
        if worker is not None:
            worker.stop()
        serve.stop()
