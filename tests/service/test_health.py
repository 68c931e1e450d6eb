"""Health reports each dependency; an unreachable broker gives 503 and never a stack trace."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from app import crud
from app.core.db import session_scope
from app.main import create_app
from app.models import WebhookDelivery, WebhookEndpoint

from .conftest import auth, make_settings
from .helpers import free_port


def test_broker_down(api_settings, make_key, tiny_zip: Path, tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = make_settings(tmp_path, api_settings.database_url, dead, "mmguard-test-dead")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        health = client.get("/api/v1/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded" and body["database"] == "ok" and body["storage"] == "ok"
        assert body["broker"].startswith("error")

        owner_name = f"broker-down-{uuid.uuid4().hex[:8]}"
        h = auth(make_key(owner_name))
        with session_scope(api_settings.sqlalchemy_url) as session:  # an endpoint the owner registered earlier
            owner = crud.get_or_create_owner(session, owner_name)
            session.add(WebhookEndpoint(owner_id=owner.id, url="http://127.0.0.1:9/hook", secret="whsec_x"))
        dataset = client.post("/api/v1/datasets", headers=h, files={"file": ("a.zip", tiny_zip.read_bytes())})
        assert dataset.status_code == 201
        response = client.post("/api/v1/jobs", headers=h, json={"dataset_id": dataset.json()["id"], "preset": "fast"})
        assert response.status_code == 503
        assert response.json() == {"detail": "the job queue is unreachable; try again later"}
        jobs = client.get("/api/v1/jobs", headers=h).json()["data"]
        assert jobs[0]["status"] == "failed" and "unreachable" in jobs[0]["error"]
        with session_scope(api_settings.sqlalchemy_url) as session:  # its event waits for the workers' sweep
            events = session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.job_id == uuid.UUID(jobs[0]["id"]))).all()
            assert [(e.event_type, e.status) for e in events] == [("job.failed", "pending")]


def test_database_down(api_settings, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/none",
                             api_settings.broker_url, "mmguard-test-dead")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/api/v1/health").json()["database"].startswith("error")
        response = client.get("/api/v1/jobs", headers=auth("mmg_0123456789ab_x"))
        assert response.status_code == 503
        assert response.json() == {"detail": "the database is unavailable; try again later"}
