"""Job creation, validation, listing and cancelling while queued (no worker on this queue)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from app.core.config import Settings
from app.core.db import session_scope
from app.jobspec import config_for_run
from app.models import Job
from mmguard_core.config import preset

from .conftest import auth


@pytest.fixture(scope="module")
def owner(client, make_key, tiny_zip: Path) -> dict:
    key = make_key()
    dataset = client.post("/api/v1/datasets", headers=auth(key), files={"file": ("a.zip", tiny_zip.read_bytes())}).json()
    return {"key": key, "headers": auth(key), "dataset": dataset["id"]}


def test_create_job_is_202_with_location(client, owner: dict, api_settings: Settings) -> None:
    response = client.post("/api/v1/jobs", headers=owner["headers"],
                           json={"dataset_id": owner["dataset"], "preset": "fast", "config": {"epsilon": "4/255"}})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["preset"] == "fast" and job["error"] is None
    assert job["progress"] == {"done": 0, "total": 4, "stage": "queued"}
    expected = preset("fast", epsilon="4/255").to_dict()
    assert job["config"] == expected
    assert job["created_at"].endswith(("Z", "+00:00"))
    assert client.get(response.headers["location"], headers=owner["headers"]).json() == job
    with session_scope(api_settings.sqlalchemy_url) as session:  # its message reached the broker, and the row says so
        assert session.get(Job, uuid.UUID(job["id"])).enqueued_at is not None


def test_default_preset_is_balanced(client, owner: dict) -> None:
    job = client.post("/api/v1/jobs", headers=owner["headers"], json={"dataset_id": owner["dataset"]}).json()
    assert job["preset"] == "balanced" and job["config"] == preset("balanced").to_dict()
    job = client.post("/api/v1/jobs", headers=owner["headers"],
                      json={"dataset_id": owner["dataset"], "config": {"shared_steps": 3}}).json()
    assert job["preset"] is None and job["config"]["shared_steps"] == 3


@pytest.mark.parametrize("victim", ["cnn", "cnn:bow", "zoo:paligemma"])
def test_verify_victims_without_checkpoint_files_need_no_models_folder(client, owner: dict, victim: str) -> None:
    response = client.post("/api/v1/jobs", headers=owner["headers"],
                           json={"dataset_id": owner["dataset"], "config": {"verify_victim": victim}})
    assert response.status_code == 202, response.text
    assert response.json()["config"]["verify_victim"] == victim


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"preset": "ultra"}, "preset: 'ultra' is not one of fast, balanced, strong"),
        ({"config": {"epsilon": 0.5}}, "epsilon"),
        ({"config": {"epsilon": "eight"}}, "epsilon: cannot read 'eight'"),
        ({"config": {"epsilon": [8, 255]}}, "epsilon: [8, 255] is not a number"),
        ({"config": {"robust_epsilon": {"value": 2}}}, "robust_epsilon: {'value': 2} is not a number"),
        ({"config": {"robust_epsilon": True}}, "robust_epsilon: True is not a number"),
        ({"config": {"no_such_field": 1}}, "unknown field(s) no_such_field"),
        ({"config": {"shared_steps": "many"}}, "shared_steps"),
        ({"preset": "fast", "config": {"trigger_length": 99}}, "trigger_length"),
        ({"config": {"surrogates": ["llava:/etc"]}}, "only the built-in zoo"),
        ({"config": {"surrogates": ["nocolon"]}}, "surrogates"),
        ({"config": {"verify_victim": "llava:/etc"}}, "verify_victim: 'llava:/etc' names a checkpoint path"),
        ({"preset": "strong", "config": {"verify": "sometimes"}}, "verify: 'sometimes' must be true or false"),
        ({"config": [1, 2]}, "config"),
        ({"preset": "fast", "config": {"epsilon": None}}, "null values"),
        ({"config": {"bph_betas": ["x", 1, 1]}}, "bph_betas: ['x', 1, 1]; use three non-negative numbers"),
        ({"config": {"bph_betas": [1, 1]}}, "bph_betas"),
        ({"config": {"binding_layers": 5}}, "binding_layers: 5; use middle, all, last"),
        ({"config": {"surrogates": ["zoo:lava"]}}, "surrogates: unknown zoo family 'lava'; known: gemma3"),
        ({"config": {"verify_victim": "zoo:nope"}}, "verify_victim: unknown zoo family 'nope'"),
        ({"config": {"epsilon": 10**400}}, "epsilon: far too large a number"),
    ],
)
def test_bad_config_is_422_with_readable_message(client, owner: dict, body: dict, message: str) -> None:
    response = client.post("/api/v1/jobs", headers=owner["headers"], json={"dataset_id": owner["dataset"], **body})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert "Traceback" not in response.text


def test_a_lone_surrogate_in_a_model_name_is_refused_and_stores_nothing(client, owner: dict) -> None:
    # written as a JSON escape (no UTF-8 encodes it); were it stored, every listing of the jobs would fail
    body = json.dumps({"dataset_id": owner["dataset"], "config": {"surrogates": ["zoo:llava\ud800"]}})
    before = client.get("/api/v1/jobs", headers=owner["headers"]).json()
    response = client.post("/api/v1/jobs", headers={**owner["headers"], "Content-Type": "application/json"},
                           content=body.encode())
    assert response.status_code == 422 and "surrogates: unknown zoo family" in response.json()["detail"]
    listing = client.get("/api/v1/jobs", headers=owner["headers"])
    assert listing.status_code == 200 and listing.json() == before


def test_malformed_bodies(client, owner: dict) -> None:
    h = owner["headers"]
    for body in ({}, {"dataset_id": "nope"}, {"dataset_id": owner["dataset"], "extra": 1}):
        response = client.post("/api/v1/jobs", headers=h, json=body)
        assert response.status_code == 422 and isinstance(response.json()["detail"], str), response.text
    response = client.post("/api/v1/jobs", headers={**h, "Content-Type": "application/json"}, content=b"{broken")
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)
    response = client.post("/api/v1/jobs", headers=h, json={"dataset_id": str(uuid.uuid4())})
    assert response.status_code == 404 and response.json() == {"detail": "dataset not found"}


def test_list_filter_and_cancel_queued(client, make_key, tiny_zip: Path) -> None:
    h = auth(make_key())
    dataset = client.post("/api/v1/datasets", headers=h, files={"file": ("a.zip", tiny_zip.read_bytes())}).json()
    ids = [client.post("/api/v1/jobs", headers=h, json={"dataset_id": dataset["id"], "preset": "fast"}).json()["id"]
           for _ in range(3)]
    cancelled = client.post(f"/api/v1/jobs/{ids[1]}/cancel", headers=h)
    assert cancelled.status_code == 202
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["cancel_requested"] and body["finished_at"]
    again = client.post(f"/api/v1/jobs/{ids[1]}/cancel", headers=h)
    assert again.status_code == 202 and again.json()["status"] == "cancelled"  # idempotent

    page = client.get("/api/v1/jobs", headers=h).json()
    assert page["count"] == 3 and [j["id"] for j in page["data"]] == ids[::-1]
    queued = client.get("/api/v1/jobs?status=queued", headers=h).json()
    assert queued["count"] == 2 and {j["id"] for j in queued["data"]} == {ids[0], ids[2]}
    assert client.get("/api/v1/jobs?status=cancelled&limit=1", headers=h).json()["data"][0]["id"] == ids[1]
    bad = client.get("/api/v1/jobs?status=paused", headers=h)
    assert bad.status_code == 422 and "status" in bad.json()["detail"]

    # results of an unfinished job
    for what in ("archive", "report"):
        response = client.get(f"/api/v1/jobs/{ids[0]}/{what}", headers=h)
        assert response.status_code == 409 and "queued" in response.json()["detail"]


def test_health_and_presets(client) -> None:
    health = client.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}
    presets = {p["name"]: p["config"] for p in client.get("/api/v1/presets").json()}
    assert set(presets) == {"fast", "balanced", "strong"}


def test_openapi_operation_ids(client) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"datasets-upload_dataset", "jobs-create_job", "jobs-cancel_job", "jobs-download_archive",
            "jobs-get_report", "utils-health"} <= ids
    upload = spec["paths"]["/api/v1/datasets"]["post"]
    assert "file" in upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


def test_the_worker_machine_decides_threads_and_device() -> None:
    stored = preset("balanced").to_dict() | {"device": "cpu"}  # a job row whose owner asked for the CPU
    config = config_for_run(stored, 3, Settings(device="cuda").device)
    assert config.device == "cuda" and config.threads == 3
    assert {k: v for k, v in config.to_dict().items() if k not in ("device", "threads")} == {
        k: v for k, v in stored.items() if k not in ("device", "threads")}
    assert config_for_run(stored, None, Settings().device).device == "auto"


def test_a_bad_worker_device_setting_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="device"):
        Settings(device="gpu")
