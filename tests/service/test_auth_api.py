"""API keys and owner isolation: every endpoint answers 404 for another owner's rows."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from app import crud
from app.core.db import session_scope
from app.models import ApiKey

from .conftest import auth


@pytest.fixture(scope="module")
def two_owners(client, make_key, tiny_zip: Path) -> dict:
    alice, bob = make_key(), make_key()
    dataset = client.post("/api/v1/datasets", headers=auth(alice), files={"file": ("a.zip", tiny_zip.read_bytes())}).json()
    job = client.post("/api/v1/jobs", headers=auth(alice), json={"dataset_id": dataset["id"], "preset": "fast"}).json()
    return {"alice": alice, "bob": bob, "dataset": dataset["id"], "job": job["id"]}


def owned_endpoints(d: str, j: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"/api/v1/datasets/{d}", None),
        ("DELETE", f"/api/v1/datasets/{d}", None),
        ("GET", f"/api/v1/jobs/{j}", None),
        ("POST", f"/api/v1/jobs/{j}/cancel", None),
        ("GET", f"/api/v1/jobs/{j}/archive", None),
        ("GET", f"/api/v1/jobs/{j}/report", None),
        ("POST", "/api/v1/jobs", {"dataset_id": d, "preset": "fast"}),
    ]


def test_other_owner_gets_404_everywhere(client, two_owners: dict) -> None:
    bob = auth(two_owners["bob"])
    for method, path, body in owned_endpoints(two_owners["dataset"], two_owners["job"]):
        response = client.request(method, path, headers=bob, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] in ("dataset not found", "job not found")
    assert client.get("/api/v1/datasets", headers=bob).json() == {"data": [], "count": 0}
    assert client.get("/api/v1/jobs", headers=bob).json() == {"data": [], "count": 0}
    # and the rows are untouched for their owner
    alice = auth(two_owners["alice"])
    assert client.get(f"/api/v1/datasets/{two_owners['dataset']}", headers=alice).status_code == 200
    assert client.get(f"/api/v1/jobs/{two_owners['job']}", headers=alice).json()["status"] == "queued"


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-key", "Bearer mmg_0123456789ab_wrongsecret",
     "Token abc"],
)
def test_bad_keys_are_401(client, two_owners: dict, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path, body in [*owned_endpoints(two_owners["dataset"], two_owners["job"]),
                               ("GET", "/api/v1/datasets", None), ("GET", "/api/v1/jobs", None),
                               ("POST", "/api/v1/datasets", None)]:
        response = client.request(method, path, headers=headers, json=body)
        assert response.status_code == 401, (header, method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["detail"]


def test_tampered_and_revoked_keys(client, make_key, migrated_pg: str) -> None:
    key = make_key()
    assert client.get("/api/v1/datasets", headers=auth(key)).status_code == 200
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert client.get("/api/v1/datasets", headers=auth(tampered)).status_code == 401
    prefix = key.split("_")[1]
    with session_scope(migrated_pg) as session:
        assert crud.revoke_api_key(session, prefix)
    assert client.get("/api/v1/datasets", headers=auth(key)).status_code == 401


def test_keys_are_stored_as_digests(make_key, migrated_pg: str) -> None:
    key = make_key("digest-check")
    with session_scope(migrated_pg) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == key.split("_")[1]))
        assert row is not None and key not in (row.digest, row.prefix) and len(row.digest) == 64
    secret = key.split("_", 2)[2]
    assert len(secret) >= 43  # 32 random bytes, url-safe base64


def test_unknown_ids_and_malformed_ids(client, make_key) -> None:
    key = auth(make_key())
    assert client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=key).status_code == 404
    response = client.get("/api/v1/jobs/not-a-uuid", headers=key)
    assert response.status_code == 422 and "job_id" in response.json()["detail"]
