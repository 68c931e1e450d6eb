"""Fixtures for the pipeline tests: a real `mmguard serve` (embedded: SQLite, filesystem queue, worker
child) that may call webhooks on 127.0.0.1, and its local owner's key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service.helpers import VENV_BIN, Proc, dataset_zip, free_port, pool_children, service_env, wait_for

WEBHOOK_ENV = {
    "MMGUARD_WEBHOOK_ALLOW": json.dumps(["127.0.0.1"]),  # the test receiver; everything else private is refused
    "MMGUARD_WEBHOOK_RETRY_DELAYS": json.dumps([0.5, 1.0]),
}


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("pipeline-embedded")
    data_dir = root / "state"
    port = free_port()
    env = service_env({"MMGUARD_HEARTBEAT_SECONDS": "0.3", "MMGUARD_PROGRESS_INTERVAL_SECONDS": "0",
                       **WEBHOOK_ENV})
    proc = Proc([str(VENV_BIN / "mmguard"), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                env, root / "serve.log", cwd=root)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            raise AssertionError("serve exited:\n" + proc.output()[-4000:])
        try:
            return httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 90, 0.2, "mmguard serve")
        proc.groups.update(pool_children(proc.popen.pid))
        key = (data_dir / "local-api-key").read_text().strip()
        yield {"proc": proc, "url": base, "port": port, "key": key, "data_dir": data_dir, "env": env, "root": root}
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dataset_zip(tmp_path_factory.mktemp("pipeline-data"), n=4)
