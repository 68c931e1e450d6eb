"""The API process never imports torch; the engine package never imports the service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import settings_env
from .helpers import REPO, TINY_CONFIG, maps_torch, service_env

SCRIPT = r"""
import sys, json
from pathlib import Path
from fastapi.testclient import TestClient
from app.core.config import Settings
from app.main import create_app
import app.cli, app.server, app.embedded, app.recovery, app.core.migrate  # everything the API process loads

client = TestClient(create_app(Settings()))
from app import crud
from app.core.db import session_scope
with session_scope(Settings().sqlalchemy_url) as s:
    key = crud.create_api_key(s, crud.get_or_create_owner(s, "no-torch"))
h = {"Authorization": f"Bearer {key}"}
assert client.get("/api/v1/health").status_code == 200
ds = client.post("/api/v1/datasets", headers=h, files={"file": ("d.zip", Path(sys.argv[1]).read_bytes())})
assert ds.status_code == 201, ds.text
job = client.post("/api/v1/jobs", headers=h, json={"dataset_id": ds.json()["id"], "preset": "fast",
                                                   "config": json.loads(sys.argv[2])})
assert job.status_code == 202, job.text
client.get("/api/v1/jobs", headers=h)
client.post(f"/api/v1/jobs/{job.json()['id']}/cancel", headers=h)
client.get("/api/v1/presets")
client.get("/api/v1/openapi.json")
heavy = sorted(m for m in ("torch", "transformers", "peft", "accelerate") if m in sys.modules)
print("HEAVY", heavy)
"""


def test_api_process_never_imports_torch(api_settings, tiny_zip: Path) -> None:
    import json

    env = service_env(settings_env(api_settings))
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_zip), json.dumps(TINY_CONFIG)],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout, result.stdout


def test_running_api_server_has_no_torch(deployment: dict) -> None:
    # `mmguard serve` re-executes itself cleanly: the serving process has no libtorch mapped
    assert not maps_torch(deployment["api"].popen.pid)


def test_engine_does_not_import_the_service() -> None:
    offenders = []
    for path in (REPO / "mmguard_core").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("import app", "from app", "import worker", "from worker")):
                offenders.append(f"{path.relative_to(REPO)}: {stripped}")
    assert not offenders, offenders
