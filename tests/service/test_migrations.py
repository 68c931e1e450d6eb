"""`mmguard db upgrade|downgrade` on SQLite (embedded) and Postgres, and the schema matches the models."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from app.core.migrate import current_revision, head_revision, upgrade
from app.models import Base

from .conftest import PG_ADMIN
from .helpers import VENV_BIN, service_env

TABLES = {"owners", "api_keys", "datasets", "jobs", "webhook_endpoints", "webhook_deliveries", "alembic_version"}


def db(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run([str(VENV_BIN / "mmguard"), "db", *args], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def check_round_trip(url: str, env: dict[str, str], cwd: Path, extra: list[str]) -> None:
    head = head_revision()
    assert f"database revision: {head} (head: {head})" in db(["upgrade", *extra], env, cwd)
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert "database revision: none" in db(["downgrade", "base", *extra], env, cwd)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)  # and back up again (in process: each `mmguard` start costs seconds on 2 cores)
        assert current_revision(url) == head
    finally:
        engine.dispose()


def test_sqlite_upgrade_downgrade(tmp_path: Path) -> None:
    env = service_env({})
    check_round_trip(f"sqlite:///{tmp_path / 'state' / 'mmguard.db'}", env, tmp_path,
                     ["--data-dir", str(tmp_path / "state")])


@pytest.fixture
def scratch_pg() -> str:
    name = f"mmguard_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_postgres_upgrade_downgrade(scratch_pg: str, tmp_path: Path) -> None:
    check_round_trip(scratch_pg, service_env({"MMGUARD_DATABASE_URL": scratch_pg}), tmp_path, [])


def test_db_and_admin_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    env = service_env({})
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [  # (arguments, exit code, a piece of the message)
        (["db", "downgrade", "nosuchrev", "--data-dir", str(tmp_path / "state")], 2, "Can't locate revision"),
        (["db", "upgrade", "--data-dir", str(a_file)], 1, "Not a directory"),
        (["admin", "revoke-key", "mmg_0123456789ab_nope", "--data-dir", str(tmp_path / "fresh")], 1, "no such active key"),
    ]
    for args, code, message in cases:
        result = subprocess.run([str(VENV_BIN / "mmguard"), *args], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == code and message in result.stderr, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr


def test_enqueued_at_backfill_leaves_queued_jobs_for_the_sweep(scratch_pg: str) -> None:
    """0003 marks finished and running jobs as sent and leaves queued ones NULL: a job stuck by the
    gap the column closes (stored, never sent) is sent by the sweep after the upgrade."""
    upgrade(scratch_pg, "0002")
    engine = create_engine(scratch_pg)
    owner, queued, done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO owners (id, name, created_at) VALUES (CAST(:id AS uuid), 'o', now())"),
                         {"id": str(owner)})
            for job_id, status in ((queued, "queued"), (done, "succeeded")):
                conn.execute(text(
                    "INSERT INTO jobs (id, owner_id, status, config, progress_done, progress_total, progress_stage,"
                    " cancel_requested, attempts, created_at, updated_at) VALUES (CAST(:id AS uuid),"
                    " CAST(:owner AS uuid), :status, '{}', 0, 1, 'queued', false, 0,"
                    " TIMESTAMPTZ '2026-11-30 12:00:00+00', now())"),
                    {"id": str(job_id), "owner": str(owner), "status": status})
        upgrade(scratch_pg)
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT status, enqueued_at FROM jobs")).all())
        assert rows["queued"] is None
        assert rows["succeeded"] is not None and rows["succeeded"].isoformat().startswith("2026-11-30T12:00:00")
    finally:
        engine.dispose()
