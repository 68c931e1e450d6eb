"""End to end on the deployment commands: `mmguard serve --no-worker` (uvicorn) and
`celery -A worker worker` on real Postgres and Redis, running real (tiny) protection jobs."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.core.queue import enqueue_job
from app.models import Dataset, Job
from worker.runner import Outcome, execute

from .flow import full_flow, poll, start_job, upload
from .helpers import TINY_CONFIG, dataset_zip, maps_torch, pool_children, wait_for

pytestmark = pytest.mark.slow

LONG_CONFIG = {**TINY_CONFIG, "shared_steps": 2000, "bilevel_rounds": 1}


@pytest.fixture(scope="module")
def owner_key(make_key) -> str:
    return make_key()


def job_row(settings, job_id: str) -> Job:  # noqa: ANN001
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.scalar(select(Job).where(Job.id == uuid.UUID(job_id)))
        assert row is not None
        session.expunge(row)
        return row


def test_full_flow(deployment: dict, owner_key: str, tiny_zip: Path, tmp_path: Path) -> None:
    job = full_flow(deployment["base"], owner_key, tiny_zip, TINY_CONFIG, tmp_path)
    row = job_row(deployment["settings"], job["id"])
    assert row.attempts == 1 and row.worker_id is None

    # redelivery of a finished job does nothing: the worker sees the row and leaves it alone
    enqueue_job(deployment["settings"], job["id"])
    assert execute(job["id"], deployment["settings"]) is Outcome.DONE
    time.sleep(2)
    again = job_row(deployment["settings"], job["id"])
    assert (again.status, again.attempts, again.finished_at) == ("succeeded", 1, row.finished_at)


def test_job_report_carries_the_verification(deployment: dict, owner_key: str, tmp_path: Path) -> None:
    """A job that asks for the held-out check: the Celery worker runs it and the stored report has it."""
    archive = dataset_zip(tmp_path, n=48, seed=31)
    config = {**TINY_CONFIG, "verify": True, "verify_victim": "cnn", "verify_epochs": 2.0}
    job = full_flow(deployment["base"], owner_key, archive, config, tmp_path)
    report = httpx.get(f"{deployment['base']}/jobs/{job['id']}/report", timeout=30,
                       headers={"Authorization": f"Bearer {owner_key}"}).raise_for_status().json()["report"]
    verification = report["verification"]
    assert verification["status"] == "done" and verification["victim"] == "cnn", verification
    assert verification["train_samples"] + verification["test_samples"] == 48
    assert set(verification["countermeasures"]) == {"jpeg75", "downscale"}
    assert 0.0 <= verification["acc_clean_trained"] <= 1.0 and report["timings"]["verification"] > 0
    # the API refuses a misspelt victim before queueing anything
    response = httpx.post(f"{deployment['base']}/jobs", headers={"Authorization": f"Bearer {owner_key}"}, timeout=30,
                          json={"dataset_id": job["dataset_id"], "preset": "balanced",
                                "config": {"verify_victim": "/etc/passwd"}})
    assert response.status_code == 422 and "verify_victim" in response.text, response.text


def test_worker_parent_never_imports_torch(deployment: dict, owner_key: str) -> None:
    parent = deployment["worker"].popen.pid
    assert not maps_torch(parent)
    children = pool_children(parent)
    assert children and all(maps_torch(c) for c in children)  # the engine loads in the pool child


def test_cancel_running_job(deployment: dict, owner_key: str, tiny_zip: Path) -> None:
    base, settings = deployment["base"], deployment["settings"]
    dataset = upload(base, owner_key, tiny_zip)
    job = start_job(base, owner_key, dataset["id"], LONG_CONFIG)
    headers = {"Authorization": f"Bearer {owner_key}"}
    job = poll(base, owner_key, job["id"], {"running"}, 120)
    wait_for(lambda: httpx.get(f"{base}/jobs/{job['id']}", headers=headers).json()["progress"]["done"] > 0, 120,
             what="progress in the shared stage")

    # a second delivery while a live worker holds the claim does nothing
    assert execute(job["id"], settings) is Outcome.BUSY
    assert job_row(settings, job["id"]).attempts == 1

    response = httpx.post(f"{base}/jobs/{job['id']}/cancel", headers=headers)
    assert response.status_code == 202 and response.json()["cancel_requested"]
    assert response.json()["status"] == "running"
    asked = time.monotonic()
    job = poll(base, owner_key, job["id"], {"cancelled", "succeeded", "failed"}, 60)
    assert job["status"] == "cancelled", job
    assert time.monotonic() - asked < 30
    assert httpx.get(f"{base}/jobs/{job['id']}/archive", headers=headers).status_code == 409
    assert deployment["worker"].alive()  # cancel is a flag, not a terminated process


def test_engine_error_ends_failed_with_message(deployment: dict, owner_key: str, tiny_zip: Path) -> None:
    base = deployment["base"]
    dataset = upload(base, owner_key, tiny_zip)
    # allowed by the API (inside MMGUARD_MODELS_DIR) but no checkpoint there: the engine raises
    job = start_job(base, owner_key, dataset["id"], {**TINY_CONFIG, "surrogates": ["llava:no-such-checkpoint"]})
    job = poll(base, owner_key, job["id"], {"succeeded", "failed", "cancelled"}, 120)
    assert job["status"] == "failed", job
    assert job["error"] and "no-such-checkpoint" in job["error"] and "Traceback" not in job["error"]
    assert job["finished_at"]


def test_worker_lost_mid_job_is_redelivered_and_finishes(deployment: dict, owner_key: str, tiny_zip: Path,
                                                         tmp_path: Path) -> None:
    base, settings = deployment["base"], deployment["settings"]
    dataset = upload(base, owner_key, tiny_zip)
    config = {**TINY_CONFIG, "shared_steps": 40}
    job = start_job(base, owner_key, dataset["id"], config)
    job = poll(base, owner_key, job["id"], {"running"}, 120)
    first = job_row(settings, job["id"])
    pid = int(first.worker_id.rpartition(":")[2])
    assert pid in pool_children(deployment["worker"].popen.pid)
    os.kill(pid, signal.SIGKILL)  # the pool child dies mid-job; the message is requeued (acks_late)
    job = poll(base, owner_key, job["id"], {"succeeded", "failed", "cancelled"}, 300)
    assert job["status"] == "succeeded", job
    row = job_row(settings, job["id"])
    assert row.attempts == 2


def test_upload_cap_over_real_http(deployment: dict, owner_key: str) -> None:
    """uvicorn in front: the 413 arrives while the client is still sending, chunked or not."""
    base, limit = deployment["base"], deployment["settings"].max_upload_bytes
    headers = {"Authorization": f"Bearer {owner_key}"}
    response = httpx.post(f"{base}/datasets", headers=headers,
                          files={"file": ("big.zip", b"PK\x03\x04" + b"\0" * (limit + 1))}, timeout=60)
    assert response.status_code == 413 and str(limit) in response.json()["detail"]

    def body():  # noqa: ANN202 - no Content-Length: the cap is enforced while streaming
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\nPK\x03\x04'
        for _ in range(limit // 65536 + 4):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    response = httpx.post(f"{base}/datasets", headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
                          content=body(), timeout=60)
    assert response.status_code == 413
    assert not list((deployment["settings"].storage_root / "datasets").glob("*/upload*"))


def test_a_job_whose_machine_died_is_taken_over_by_a_running_worker(deployment: dict, owner_key: str,
                                                                    tiny_zip: Path) -> None:
    """A job left `running` by a machine that is gone (its heartbeat stale, no message left for it):
    the live worker's periodic sweep re-queues it and runs it; no restart needed."""
    from datetime import timedelta

    from app.jobspec import build_config
    from app.models import utcnow

    base, settings = deployment["base"], deployment["settings"]
    dataset = upload(base, owner_key, tiny_zip)
    config, preset_name = build_config("fast", TINY_CONFIG, settings)
    old = utcnow() - timedelta(seconds=settings.stale_after_seconds * 4)
    with session_scope(settings.sqlalchemy_url) as session:
        owned = session.get(Dataset, uuid.UUID(dataset["id"]))
        job = Job(owner_id=owned.owner_id, dataset_id=owned.id, preset=preset_name, config=config.to_dict(),
                  progress_total=owned.sample_count, status="running", worker_id="machine-gone:4242",
                  heartbeat_at=old, started_at=old, attempts=1)
        session.add(job)
        session.flush()
        job_id = str(job.id)
    finished = poll(base, owner_key, job_id, {"succeeded", "failed", "cancelled"}, 180)
    assert finished["status"] == "succeeded", finished
    assert job_row(settings, job_id).attempts == 2


def test_a_job_whose_api_stopped_before_sending_it_is_run_by_the_sweep(deployment: dict, owner_key: str,
                                                                     tiny_zip: Path) -> None:
    """The API stored the job row and stopped before its message reached Redis (`enqueued_at` NULL):
    no message exists anywhere; the live worker's periodic sweep sends it and the job runs."""
    from datetime import timedelta

    from app.jobspec import build_config
    from app.models import utcnow

    base, settings = deployment["base"], deployment["settings"]
    dataset = upload(base, owner_key, tiny_zip)
    config, preset_name = build_config("fast", TINY_CONFIG, settings)
    with session_scope(settings.sqlalchemy_url) as session:
        owned = session.get(Dataset, uuid.UUID(dataset["id"]))
        job = Job(owner_id=owned.owner_id, dataset_id=owned.id, preset=preset_name, config=config.to_dict(),
                  progress_total=owned.sample_count,
                  created_at=utcnow() - timedelta(seconds=settings.stale_after_seconds * 2))
        session.add(job)
        session.flush()
        job_id = str(job.id)
    finished = poll(base, owner_key, job_id, {"succeeded", "failed", "cancelled"}, 180)
    assert finished["status"] == "succeeded", finished
    assert job_row(settings, job_id).enqueued_at is not None
