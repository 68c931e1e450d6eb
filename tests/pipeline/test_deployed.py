"""The client on the deployment: `mmguard serve --no-worker` + `celery -A worker worker` on real Postgres
and Redis. Concurrent repeats of one Idempotency-Key settle on Postgres' unique index; the job-end
webhook goes out from the real Celery worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from service.conftest import RUN_ID, make_settings, migrated_pg, pg_url, redis_url, settings_env  # noqa: F401
from service.helpers import TINY_CONFIG, VENV_BIN, Proc, free_port, service_env, start_worker, wait_for

from app import crud
from app.core.db import session_scope
from mmguard.client import Client

from .support import Receiver
from .test_webhooks import standard_webhooks_verify

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, migrated_pg: str, redis_url: str) -> Iterator[dict]:  # noqa: F811
    root = tmp_path_factory.mktemp("pipeline-deployed")
    queue = f"mmguard-test-{RUN_ID}-pipeline"
    settings = make_settings(root, migrated_pg, redis_url, queue, max_upload_bytes=1_000_000,
                             webhook_allow=["127.0.0.1"], webhook_retry_delays=[0.5, 1.0])
    env = service_env(settings_env(settings))
    env["MMGUARD_WEBHOOK_ALLOW"] = json.dumps(settings.webhook_allow)  # lists travel as JSON
    env["MMGUARD_WEBHOOK_RETRY_DELAYS"] = json.dumps(settings.webhook_retry_delays)
    worker = start_worker(env, queue, root / "worker.log")
    port = free_port()
    api = Proc([str(VENV_BIN / "mmguard"), "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
               env, root / "api.log")
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not api.alive():
            raise AssertionError("API exited:\n" + api.output()[-4000:])
        try:
            return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 60, 0.2, "the API")
        with session_scope(migrated_pg) as session:
            key = crud.create_api_key(session, crud.get_or_create_owner(session, f"pipeline-{uuid.uuid4().hex[:8]}"))
        yield {"url": url, "key": key, "worker": worker, "api": api}
    finally:
        api.stop()
        worker.stop()


def test_concurrent_repeats_and_webhook_on_postgres_and_celery(deployed: dict, tiny_zip: Path) -> None:
    receiver = Receiver()
    try:
        with Client(deployed["url"], deployed["key"]) as mm:
            hook = mm.create_webhook(receiver.url)
            dataset = mm.upload_dataset(tiny_zip, idempotency_key="pg-dataset")
            assert mm.upload_dataset(tiny_zip, idempotency_key="pg-dataset").id == dataset.id

            def submit(_: int) -> str:
                with Client(deployed["url"], deployed["key"]) as own:
                    return own.create_job(dataset.id, preset="fast", config=TINY_CONFIG,
                                          idempotency_key="pg-job").id

            with ThreadPoolExecutor(4) as pool:
                ids = set(pool.map(submit, range(4)))
            assert len(ids) == 1 and [j.id for j in mm.list_jobs()] == list(ids)
            job = mm.wait(ids.pop(), timeout=300, interval=0.2)
            assert job.status == "succeeded"
            wait_for(lambda: receiver.requests, 60, 0.1, "the webhook")
            delivery = wait_for(lambda: [d for d in mm.deliveries(hook.id) if d.status == "succeeded"], 30, 0.2,
                                "the delivery log")[0]
    finally:
        receiver.close()
    (request,) = receiver.requests
    assert standard_webhooks_verify(hook.secret, request["headers"], request["body"])
    assert json.loads(request["body"])["data"]["job_id"] == job.id
    assert (delivery.attempts, delivery.last_status_code) == (1, 204)
