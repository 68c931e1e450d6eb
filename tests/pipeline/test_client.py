"""mmguard.client against a real `mmguard serve` (embedded): the whole flow, typed errors,
Idempotency-Key replays and refusals, and retries across a dropped connection."""

from __future__ import annotations

import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from service.flow import check_protected
from service.helpers import TINY_CONFIG

from mmguard.client import (
    AuthError,
    Client,
    Dataset,
    InvalidRequest,
    Job,
    NotFound,
    Unreachable,
)

from .support import DropProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def mm(embedded: dict):  # noqa: ANN201
    with Client(embedded["url"], embedded["key"], backoff=0.05) as client:
        yield client


def test_full_flow_typed(mm: Client, tiny_zip: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    dataset = mm.upload_dataset(tiny_zip, progress=lambda done, total: seen.append((done, total)))
    assert isinstance(dataset, Dataset) and dataset.sample_count == 4 and not dataset.replayed
    assert seen and seen[-1] == (tiny_zip.stat().st_size, tiny_zip.stat().st_size)
    job = mm.create_job(dataset.id, preset="fast", config=TINY_CONFIG)
    assert isinstance(job, Job) and job.status == "queued"
    updates: list[Job] = []
    job = mm.wait(job.id, timeout=300, interval=0.1, on_update=updates.append)
    assert job.status == "succeeded" and job.finished_at is not None
    assert updates[-1].status == "succeeded"
    out = mm.download(job.id, tmp_path / "protected.zip")
    assert zipfile.is_zipfile(out) and not (tmp_path / "protected.zip.part").exists()
    check_protected(tiny_zip, out, job.config["epsilon"])
    report = mm.report(job.id)
    assert report["job"]["id"] == job.id and report["report"]
    assert job.id in [j.id for j in mm.list_jobs(status="succeeded")]


def test_typed_errors(embedded: dict, mm: Client, tmp_path: Path) -> None:
    with Client(embedded["url"], "mmg_000000000000_wrong", retries=0) as bad, pytest.raises(AuthError) as auth:
        bad.list_jobs()
    assert auth.value.status == 401 and auth.value.detail
    with pytest.raises(NotFound) as missing:
        mm.get_job(str(uuid.uuid4()))
    assert "job" in missing.value.detail
    not_zip = tmp_path / "notes.zip"
    not_zip.write_bytes(b"hello")
    with pytest.raises(InvalidRequest) as refused:
        mm.upload_dataset(not_zip)
    assert refused.value.status == 422 and ".zip or .tar" in refused.value.detail
    with Client("http://127.0.0.1:9", "k", retries=1, backoff=0.01) as nowhere, pytest.raises(Unreachable):
        nowhere.health()


def test_idempotency_key_replays_and_refuses(mm: Client, tiny_zip: Path, tmp_path: Path) -> None:
    key = f"ds-{uuid.uuid4()}"
    first = mm.upload_dataset(tiny_zip, idempotency_key=key)
    again = mm.upload_dataset(tiny_zip, idempotency_key=key)
    assert again.id == first.id and again.replayed and not first.replayed
    other = tmp_path / "other.zip"
    other.write_bytes(tiny_zip.read_bytes() + b"")  # same bytes, other name: still the same upload
    assert mm.upload_dataset(other, idempotency_key=key).id == first.id
    with zipfile.ZipFile(tiny_zip) as src, zipfile.ZipFile(tmp_path / "changed.zip", "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("extra.txt", "x")
    with pytest.raises(InvalidRequest) as clash:
        mm.upload_dataset(tmp_path / "changed.zip", idempotency_key=key)
    assert "Idempotency-Key" in clash.value.detail

    job_key = f"job-{uuid.uuid4()}"
    config = {**TINY_CONFIG, "shared_steps": 1}
    job = mm.create_job(first.id, preset="fast", config=config, idempotency_key=job_key)
    replay = mm.create_job(first.id, preset="fast", config=config, idempotency_key=job_key)
    assert replay.id == job.id and replay.replayed
    with pytest.raises(InvalidRequest) as clash:
        mm.create_job(first.id, preset="strong", config=config, idempotency_key=job_key)
    assert clash.value.status == 422 and "different body" in clash.value.detail
    # the key is per owner and per kind of object: the dataset's key does not collide with a job's
    assert mm.create_job(first.id, preset="fast", config=config, idempotency_key=key).id != job.id
    # a malformed key is refused
    response = httpx.post(f"{mm.base}/jobs", headers={**mm._http.headers, "Idempotency-Key": "has space"},
                          json={"dataset_id": first.id})
    assert response.status_code == 422
    mm.wait(job.id, timeout=300, interval=0.2)


def test_retries_across_dropped_connections_create_nothing_twice(embedded: dict, mm: Client, tiny_zip: Path) -> None:
    """The server handles the POST, the connection drops before the answer arrives; the client retries
    with the same Idempotency-Key and gets the original object: one dataset, one job."""
    proxy = DropProxy(embedded["port"])
    try:
        datasets_before = {d.id for d in mm.list_datasets(limit=1000)}
        jobs_before = {j.id for j in mm.list_jobs(limit=1000)}
        with Client(proxy.url, embedded["key"], backoff=0.05) as flaky:
            proxy.drop = 1
            dataset = flaky.upload_dataset(tiny_zip)
            assert proxy.dropped == 1 and dataset.replayed  # the retry was answered from the first upload
            proxy.drop = 2  # two drops in a row: the third attempt gets through
            job = flaky.create_job(dataset.id, preset="fast", config={**TINY_CONFIG, "shared_steps": 1})
            assert proxy.dropped == 3 and job.replayed
        new_datasets = {d.id for d in mm.list_datasets(limit=1000)} - datasets_before
        new_jobs = {j.id for j in mm.list_jobs(limit=1000)} - jobs_before
        assert new_datasets == {dataset.id}
        assert new_jobs == {job.id}
        assert mm.wait(job.id, timeout=300, interval=0.2).status == "succeeded"
    finally:
        proxy.close()
