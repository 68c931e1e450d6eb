"""Small helpers for the service tests: tiny datasets, processes, polling."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from mmguard_core import synth

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# a job that takes seconds on one CPU thread with the test-size zoo
TINY_CONFIG: dict[str, Any] = {
    "zoo_size": "test",
    "surrogates": ["zoo:llava"],
    "shared_steps": 2,
    "sample_steps": 1,
    "bilevel_rounds": 1,
    "inner_steps": 1,
    "trigger_candidates": 4,
    "batch_size": 4,
    "threads": 1,
}


def dataset_folder(folder: Path, n: int = 4, seed: int = 7, task: str = "color") -> Path:
    synth.write_dataset(folder, synth.generate(task, n, seed=seed, image_size=32))
    return folder


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return target


def dataset_zip(tmp: Path, n: int = 4, seed: int = 7, task: str = "color") -> Path:
    folder = dataset_folder(tmp / f"ds-{task}-{n}-{seed}", n=n, seed=seed, task=task)
    return zip_folder(folder, tmp / f"ds-{task}-{n}-{seed}.zip")


def read_zip_dataset(data: bytes) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """(annotation records, {image path: uint8 RGB array}) of a dataset zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        annotation = next(n for n in names if n.rsplit("/", 1)[-1] in ("data.jsonl", "metadata.jsonl", "train.jsonl"))
        base = annotation.rsplit("/", 1)[0] + "/" if "/" in annotation else ""
        records = [json.loads(line) for line in archive.read(annotation).decode().splitlines() if line.strip()]
        images = {}
        for record in records:
            rel = record.get("image") or record.get("file_name")
            with archive.open(base + rel) as handle:
                images[rel] = np.asarray(Image.open(handle).convert("RGB"), dtype=np.int16)
    return records, images


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child process with its output in a log file (read back on failure)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.log = log
        self.groups: set[int] = set()  # other process groups to clean up (e.g. serve's worker child)
        self._handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv, env=env, cwd=cwd or REPO, stdout=self._handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Signal the process itself (as `docker stop` does), then kill whatever is left of its group."""
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for group in {self.popen.pid, *self.groups}:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.popen.poll() is None:
            self.popen.wait(10)
        self._handle.close()


def service_env(settings_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMGUARD_")}
    env.update(settings_env)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    if "MMGUARD_CACHE_DIR" in os.environ:
        env["MMGUARD_CACHE_DIR"] = os.environ["MMGUARD_CACHE_DIR"]
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(env: dict[str, str], queue: str, log: Path) -> Proc:
    """`celery -A worker worker`, the deployment command, waiting until it is ready."""
    argv = [str(VENV_BIN / "celery"), "-A", "worker", "worker", "--loglevel=INFO", "--concurrency=1",
            "--pool=prefork", "-Q", queue, "--without-gossip", "--without-mingle", "-n", f"test-{queue}@%h"]
    proc = Proc(argv, env, log)
    try:
        wait_for(lambda: (not proc.alive()) or " ready." in proc.output(), 120, 0.2, "the Celery worker")
    except AssertionError:
        proc.stop()
        raise AssertionError("worker did not start:\n" + proc.output()[-4000:]) from None
    if not proc.alive():
        raise AssertionError("worker exited:\n" + proc.output()[-4000:])
    return proc


def pool_children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def maps_torch(pid: int) -> bool:
    """Whether the process has libtorch mapped (i.e. has imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def start_embedded(root: Path, extra_env: dict[str, str] | None = None,
                   serve_args: Sequence[str] = ()) -> tuple[Proc, dict[str, Any]]:
    """`mmguard serve --data-dir root/state [serve_args]` on a free port, as an owner starts it, waited
    on until /health answers. The caller stops the returned Proc (its worker child is in proc.groups)."""
    data_dir = root / "state"
    port = free_port()
    env = service_env({"MMGUARD_HEARTBEAT_SECONDS": "0.3", "MMGUARD_PROGRESS_INTERVAL_SECONDS": "0",
                       **(extra_env or {})})
    proc = Proc([str(VENV_BIN / "mmguard"), "serve", "--port", str(port), "--data-dir", str(data_dir),
                 *serve_args], env, root / "serve.log", cwd=root)
    origin = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            raise AssertionError("serve exited:\n" + proc.output()[-4000:])
        try:
            return httpx.get(f"{origin}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 90, 0.2, "mmguard serve")
    except BaseException:
        proc.stop()
        raise
    workers = pool_children(proc.popen.pid)
    proc.groups.update(workers)  # the worker child runs in its own process group
    key = (data_dir / "local-api-key").read_text().strip()
    return proc, {"proc": proc, "origin": origin, "port": port, "key": key, "data_dir": data_dir, "env": env,
                  "root": root, "workers": workers}

