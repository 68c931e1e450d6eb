"""app.webhooks.deliver on an embedded SQLite database (no server): the retry schedule, giving up, and a
target refused at send time (not retried); and the client package stays torch- and app-free."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from service.helpers import free_port

from app import crud
from app.core import migrate
from app.core.config import Settings
from app.core.db import session_scope
from app.models import WebhookDelivery, WebhookEndpoint
from app.webhooks import deliver, new_secret


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, webhook_allow=["127.0.0.1"], webhook_retry_delays=[0.5, 1.0],
                        webhook_timeout_seconds=2)
    settings.ensure_dirs()
    migrate.upgrade(settings.sqlalchemy_url)
    return settings


def delivery_to(settings: Settings, url: str) -> str:
    with session_scope(settings.sqlalchemy_url) as session:
        owner = crud.get_or_create_owner(session, "o")
        endpoint = WebhookEndpoint(owner_id=owner.id, url=url, secret=new_secret(), description="")
        session.add(endpoint)
        session.flush()
        delivery = WebhookDelivery(endpoint_id=endpoint.id, owner_id=owner.id, msg_id="msg_1", event_type="job.failed",
                                   payload='{"type":"job.failed"}')
        session.add(delivery)
        session.flush()
        return str(delivery.id)


def row(settings: Settings, delivery_id: str) -> WebhookDelivery:
    with session_scope(settings.sqlalchemy_url) as session:
        found = session.get(WebhookDelivery, uuid.UUID(delivery_id))
        session.expunge(found)
        return found


def test_retries_then_gives_up(settings: Settings) -> None:
    delivery_id = delivery_to(settings, f"http://127.0.0.1:{free_port()}/nobody-listens")
    assert deliver(settings, delivery_id) == 0.5
    assert (row(settings, delivery_id).status, row(settings, delivery_id).attempts) == ("pending", 1)
    assert deliver(settings, delivery_id) == 1.0
    assert deliver(settings, delivery_id) is None
    final = row(settings, delivery_id)
    assert (final.status, final.attempts, final.next_attempt_at) == ("failed", 3, None)
    assert "ConnectError" in final.last_error
    assert deliver(settings, delivery_id) is None and row(settings, delivery_id).attempts == 3  # settled


def test_target_refused_at_send_time_is_not_retried(settings: Settings) -> None:
    delivery_id = delivery_to(settings, "http://169.254.169.254/latest/meta-data")  # e.g. the allow-list changed
    assert deliver(settings, delivery_id) is None
    final = row(settings, delivery_id)
    assert final.status == "failed" and final.attempts == 1 and final.last_error.startswith("target refused")


def test_client_imports_neither_torch_nor_the_service() -> None:
    code = ("import sys, mmguard.client, mmguard.cli; "
            "bad = [m for m in sys.modules if m == 'torch' or m.split('.')[0] in ('app', 'worker', 'mmguard_core')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
