"""The owner's walk-through over real HTTP, shared by the deployed and the embedded tests."""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from .helpers import read_zip_dataset


def upload(base: str, key: str, archive: Path) -> dict[str, Any]:
    with open(archive, "rb") as handle:
        response = httpx.post(f"{base}/datasets", headers={"Authorization": f"Bearer {key}"},
                              files={"file": (archive.name, handle, "application/zip")}, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()


def start_job(base: str, key: str, dataset_id: str, config: dict[str, Any], preset: str = "fast") -> dict[str, Any]:
    response = httpx.post(f"{base}/jobs", headers={"Authorization": f"Bearer {key}"},
                          json={"dataset_id": dataset_id, "preset": preset, "config": config}, timeout=30)
    assert response.status_code == 202, response.text
    assert response.headers["location"].endswith(f"/jobs/{response.json()['id']}")
    return response.json()


def poll(base: str, key: str, job_id: str, until: set[str], timeout: float, interval: float = 0.05,
         seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Poll the job until its status is in `until`; every observation is appended to `seen`."""
    deadline = time.monotonic() + timeout
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while True:
            job = client.get(f"{base}/jobs/{job_id}").raise_for_status().json()
            if seen is not None:
                seen.append(job)
            if job["status"] in until:
                return job
            assert time.monotonic() < deadline, f"job still {job['status']} after {timeout:.0f}s: {job}"
            time.sleep(interval)


def download(base: str, key: str, job_id: str, target: Path) -> Path:
    with httpx.stream("GET", f"{base}/jobs/{job_id}/archive", headers={"Authorization": f"Bearer {key}"},
                      timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/zip"
        declared = int(response.headers["content-length"])
        with open(target, "wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
    assert target.stat().st_size == declared, (target.stat().st_size, declared)
    return target


def check_protected(original_zip: Path, protected_zip: Path, epsilon: float) -> None:
    """Images within epsilon of the originals (and changed), triggers in the questions, answers unchanged."""
    before, images_before = read_zip_dataset(original_zip.read_bytes())
    after, images_after = read_zip_dataset(protected_zip.read_bytes())
    assert len(after) == len(before), (len(after), len(before))
    bound = math.ceil(epsilon * 255 - 1e-9)
    changed = 0
    for old, new in zip(before, after, strict=True):
        assert new["answer"] == old["answer"], (old, new)
        assert new["question"] != old["question"] and old["question"] in new["question"], (old, new)
        a, b = images_before[old["image"]], images_after[new["image"]]
        assert a.shape == b.shape, (old["image"], a.shape, b.shape)
        assert int(abs(a - b).max()) <= bound, (old["image"], int(abs(a - b).max()), bound)
        changed += int(abs(a - b).max() > 0)
    assert changed > 0, "no image was perturbed"


def check_report(base: str, key: str, job: dict[str, Any]) -> dict[str, Any]:
    response = httpx.get(f"{base}/jobs/{job['id']}/report", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job"]["id"] == job["id"] and body["job"]["status"] == "succeeded"
    report = body["report"]
    # the worker machine decides the device (MMGUARD_DEVICE, default auto); everything else is the job's
    ran, asked = dict(report["config"]), dict(job["config"])
    assert ran.pop("device") == "auto" and report["device"] in ("cpu", "cuda"), report["device"]
    asked.pop("device")
    assert ran == asked, (ran, asked)
    assert len(report["images"]) == report["dataset"]["samples"] > 0, report["dataset"]
    assert report["summary"]["linf_max"] <= job["config"]["epsilon"] + 1e-6, report["summary"]
    assert "input" not in report and "output" not in report  # no server paths
    return report


def full_flow(base: str, key: str, archive: Path, config: dict[str, Any], tmp: Path, timeout: float = 300) -> dict:
    dataset = upload(base, key, archive)
    job = start_job(base, key, dataset["id"], config)
    seen: list[dict[str, Any]] = []
    job = poll(base, key, job["id"], {"succeeded", "failed", "cancelled"}, timeout, seen=seen)
    assert job["status"] == "succeeded", job
    statuses = [s["status"] for s in seen]
    assert "running" in statuses, statuses
    progress = [(s["progress"]["stage"], s["progress"]["done"], s["progress"]["total"]) for s in seen
                if s["status"] == "running"]
    assert len(set(progress)) >= 3, f"progress did not move: {progress}"
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    assert datetime.fromisoformat(job["created_at"]) <= started <= finished, job
    assert job["progress"]["done"] == job["progress"]["total"] and job["progress"]["stage"] == "done", job
    protected = download(base, key, job["id"], tmp / f"protected-{job['id']}.zip")
    check_protected(archive, protected, job["config"]["epsilon"])
    check_report(base, key, job)
    return job
