"""Fixtures for the service tests: a fresh Postgres database, real Redis, a real Celery worker.

Postgres and Redis must be running (scripts/ensure_services.sh starts them); override their
addresses with MMGUARD_TEST_POSTGRES (an admin URL) and MMGUARD_TEST_REDIS.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import crud
from app.core import migrate
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app

from .helpers import Proc, dataset_zip, service_env, start_worker

PG_ADMIN = os.environ.get("MMGUARD_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("MMGUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]


def _admin_engine():  # noqa: ANN202
    return create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, empty Postgres database for this test run, dropped afterwards.

    Named per fixture instance: tests/pipeline imports this fixture too, and both session-scoped
    instances can be alive at once in a whole-suite run."""
    name = f"mmguard_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN} (run scripts/ensure_services.sh): {exc}")
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    yield url
    from app.core.db import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_pg(pg_url: str) -> str:
    migrate.upgrade(pg_url)
    return pg_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"Redis is not reachable at {REDIS} (run scripts/ensure_services.sh): {exc}")
    yield REDIS
    # our queues are named mmguard-test-<run id>-*; leave everything else alone
    for key in client.scan_iter(match=f"*mmguard-test-{RUN_ID}*"):
        client.delete(key)
    client.close()


def make_settings(root: Path, pg: str, broker: str, queue: str, **extra: object) -> Settings:
    return Settings(
        data_dir=root,
        database_url=pg,
        broker_url=broker,
        storage_dir=root / "storage",
        work_dir=root / "work",
        queue=queue,
        heartbeat_seconds=0.3,
        stale_after_seconds=5,
        progress_interval_seconds=0.0,
        threads=1,
        preload_engine=True,
        **extra,  # type: ignore[arg-type]
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as MMGUARD_* variables, for child processes."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"MMGUARD_{name.upper()}"] = str(value)
    return env


@pytest.fixture(scope="session")
def api_settings(tmp_path_factory: pytest.TempPathFactory, migrated_pg: str, redis_url: str) -> Settings:
    """Settings for in-process API tests: their queue has no worker, so jobs stay queued."""
    root = tmp_path_factory.mktemp("api")
    return make_settings(root, migrated_pg, redis_url, f"mmguard-test-{RUN_ID}-api", max_upload_bytes=2_000_000)


@pytest.fixture(scope="session")
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def make_key(migrated_pg: str):  # noqa: ANN201
    """make_key(owner) -> a fresh API key for that owner (created if new)."""

    def make(owner: str | None = None) -> str:
        with session_scope(migrated_pg) as session:
            return crud.create_api_key(session, crud.get_or_create_owner(session, owner or f"owner-{uuid.uuid4().hex[:8]}"))

    return make


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dataset_zip(tmp_path_factory.mktemp("data"), n=4)


# -- the deployment: `mmguard serve --no-worker` + `celery -A worker worker` on Postgres and Redis ----
@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory, migrated_pg: str, redis_url: str) -> Iterator[dict]:
    from .helpers import VENV_BIN, free_port, wait_for

    root = tmp_path_factory.mktemp("deployed")
    queue = f"mmguard-test-{RUN_ID}-e2e"
    (root / "models").mkdir()
    settings = make_settings(root, migrated_pg, redis_url, queue, models_dir=root / "models",
                             max_upload_bytes=1_000_000)
    env = service_env(settings_env(settings))
    worker = start_worker(env, queue, root / "worker.log")
    port = free_port()
    api = Proc([str(VENV_BIN / "mmguard"), "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
               env, root / "api.log")
    base = f"http://127.0.0.1:{port}/api/v1"

    def healthy() -> bool:
        import httpx

        if not api.alive():
            raise AssertionError("API exited:\n" + api.output()[-4000:])
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 60, 0.2, "the API")
        yield {"base": base, "settings": settings, "worker": worker, "api": api, "env": env, "root": root}
    finally:
        api.stop()
        worker.stop()


@pytest.fixture(scope="session")
def worker_proc(deployment: dict) -> Proc:
    return deployment["worker"]
