"""Redelivery safety of the job claim (worker.runner.claim) on real Postgres rows."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app import crud
from app.core.db import session_scope
from app.models import Dataset, Job, utcnow
from worker.runner import Outcome, claim, execute

ME = "this-host-test:1"


@pytest.fixture
def new_job(migrated_pg: str, api_settings):  # noqa: ANN201
    def make(storage_key: str = "datasets/x/source.zip", sample_count: int = 1, **values) -> uuid.UUID:  # noqa: ANN003
        values.setdefault("config", {})
        values.setdefault("enqueued_at", utcnow())  # sent, as the API's rows are (else a worker's sweep sends it)
        with session_scope(migrated_pg) as session:
            owner = crud.get_or_create_owner(session, "claims")
            dataset = Dataset(owner_id=owner.id, name="d.zip", storage_key=storage_key, archive_format="zip",
                              size_bytes=1, sample_count=sample_count, layout="jsonl", kind="vqa")
            session.add(dataset)
            session.flush()
            job = Job(owner_id=owner.id, dataset_id=dataset.id, **values)
            session.add(job)
            session.flush()
            return job.id

    return make


def row(url: str, job_id: uuid.UUID) -> Job:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def test_queued_job_is_claimed_once(new_job, api_settings) -> None:
    job_id = new_job()
    assert claim(job_id, api_settings, ME) is None
    job = row(api_settings.sqlalchemy_url, job_id)
    assert (job.status, job.worker_id, job.attempts) == ("running", ME, 1) and job.started_at
    # a second delivery elsewhere while the claim is fresh does nothing
    assert claim(job_id, api_settings, "other-host:2") is Outcome.BUSY
    assert row(api_settings.sqlalchemy_url, job_id).attempts == 1


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_finished_job_is_left_alone(new_job, api_settings, status: str) -> None:
    job_id = new_job(status=status, finished_at=utcnow())
    assert claim(job_id, api_settings, ME) is Outcome.DONE
    job = row(api_settings.sqlalchemy_url, job_id)
    assert job.status == status and job.attempts == 0


def test_stale_claim_is_taken_over(new_job, api_settings) -> None:
    old = utcnow() - timedelta(seconds=api_settings.stale_after_seconds + 1)
    job_id = new_job(status="running", worker_id="gone-host:7", heartbeat_at=old, attempts=1, started_at=old)
    assert claim(job_id, api_settings, ME) is None
    job = row(api_settings.sqlalchemy_url, job_id)
    assert (job.status, job.worker_id, job.attempts, job.started_at) == ("running", ME, 2, old)


def test_a_job_whose_workers_keep_dying_fails_with_a_message(new_job, api_settings) -> None:
    old = utcnow() - timedelta(hours=1)
    limit = api_settings.max_job_attempts
    job_id = new_job(status="running", worker_id="gone-host:7", heartbeat_at=old, attempts=limit)
    assert claim(job_id, api_settings, ME) is Outcome.FAILED  # finished by this delivery: its event goes out
    job = row(api_settings.sqlalchemy_url, job_id)
    assert (job.status, job.worker_id, job.attempts) == ("failed", None, limit) and job.finished_at
    assert f"stopped {limit} times" in job.error and "more memory" in job.error
    # one attempt short of the limit is still taken over
    again = new_job(status="queued", attempts=limit - 1)
    assert claim(again, api_settings, ME) is None and row(api_settings.sqlalchemy_url, again).attempts == limit


def test_stale_claim_with_cancel_request_ends_cancelled(new_job, api_settings) -> None:
    old = utcnow() - timedelta(hours=1)
    job_id = new_job(status="running", worker_id="gone-host:7", heartbeat_at=old, attempts=1, cancel_requested=True)
    assert claim(job_id, api_settings, ME) is Outcome.CANCELLED  # finished by this delivery: its event goes out
    assert row(api_settings.sqlalchemy_url, job_id).status == "cancelled"


def test_missing_and_malformed_ids(api_settings) -> None:
    assert claim(uuid.uuid4(), api_settings, ME) is Outcome.MISSING
    assert execute("not-a-uuid", api_settings) is Outcome.MISSING


def test_a_result_that_cannot_be_stored_fails_the_job(new_job, migrated_pg: str, api_settings, tmp_path) -> None:
    """The engine finishes, storing the archive does not (here: a file sits where the jobs/ folder goes):
    the job must end `failed` with a message, not stay `running` for ever."""
    from app.core.storage import make_storage
    from app.jobspec import build_config

    from .helpers import TINY_CONFIG, dataset_zip

    settings = api_settings.model_copy(update={"storage_dir": tmp_path / "storage"})
    storage = make_storage(settings.storage_root)
    storage.put_file("datasets/broken-store/source.zip", dataset_zip(tmp_path, n=4, seed=3))
    (settings.storage_root / "jobs").write_text("not a folder")
    config, _ = build_config("fast", TINY_CONFIG, settings)
    job_id = new_job(storage_key="datasets/broken-store/source.zip", sample_count=4, config=config.to_dict())
    assert execute(str(job_id), settings) is Outcome.FAILED
    job = row(migrated_pg, job_id)
    assert job.status == "failed" and job.finished_at is not None and job.worker_id is None
    assert "could not be stored" in job.error and str(settings.storage_root) not in job.error


def test_webhook_deliveries_whose_message_was_lost_are_sent_again(migrated_pg: str, api_settings) -> None:
    """A delivery recorded while the broker was down stays `pending` with no message in the queue; the
    sweep re-queues it once it is overdue, and leaves fresh ones alone."""
    import redis

    from app.models import WebhookDelivery, WebhookEndpoint
    from app.recovery import requeue_stalled_deliveries

    with session_scope(migrated_pg) as session:
        owner = crud.get_or_create_owner(session, "sweep")
        endpoint = WebhookEndpoint(owner_id=owner.id, url="http://127.0.0.1:9/hook", secret="whsec_x")
        session.add(endpoint)
        session.flush()
        job = Job(owner_id=owner.id, dataset_id=None, config={}, status="failed", finished_at=utcnow())
        session.add(job)
        session.flush()
        lost = WebhookDelivery(endpoint_id=endpoint.id, owner_id=owner.id, msg_id=f"msg_{job.id.hex}_failed",
                               event_type="job.failed", job_id=job.id, payload="{}",
                               next_attempt_at=utcnow() - timedelta(hours=1))
        fresh = WebhookDelivery(endpoint_id=endpoint.id, owner_id=owner.id, msg_id=f"msg_{job.id.hex}_fresh",
                                event_type="job.failed", job_id=job.id, payload="{}", next_attempt_at=utcnow())
        later = WebhookDelivery(endpoint_id=endpoint.id, owner_id=owner.id, msg_id=f"msg_{job.id.hex}_later",
                                event_type="job.failed", job_id=job.id, payload="{}",
                                next_attempt_at=utcnow() + timedelta(hours=1))
        session.add_all([lost, fresh, later])
        session.flush()
        lost_id, fresh_id, later_id = str(lost.id), str(fresh.id), str(later.id)
    queue = redis.Redis.from_url(api_settings.broker_url)
    before = queue.llen(api_settings.queue)
    resent = requeue_stalled_deliveries(api_settings)
    assert lost_id in resent and fresh_id not in resent
    assert queue.llen(api_settings.queue) == before + len(resent)  # a real message per delivery, on Redis
    # a second message for a delivery that is not due (an attempt in flight holds it, or a retry is
    # scheduled later) does nothing: the sweep can never make an endpoint receive an event twice at once
    from app.webhooks import deliver

    assert deliver(api_settings, later_id) is None
    with session_scope(migrated_pg) as session:
        untouched = session.get(WebhookDelivery, uuid.UUID(later_id))
        assert (untouched.status, untouched.attempts) == ("pending", 0)


def test_queued_jobs_whose_message_never_reached_the_queue_are_sent(new_job, migrated_pg: str, api_settings) -> None:
    """The API stored the row and stopped before sending its message (`enqueued_at` NULL): Redis holds
    nothing to re-deliver, so the workers' sweep sends it once the row is older than a live API's
    send could take -- and leaves rows that were sent, or are still being sent, alone."""
    import redis

    from app.recovery import requeue_unsent_jobs

    old = utcnow() - timedelta(seconds=api_settings.stale_after_seconds + 1)
    unsent = new_job(created_at=old, enqueued_at=None)
    being_sent = new_job(enqueued_at=None)  # just stored: its API request is still on its way to the broker
    sent = new_job(created_at=old, enqueued_at=old)
    running = new_job(status="running", created_at=old, enqueued_at=None, worker_id=ME, heartbeat_at=utcnow())
    queue = redis.Redis.from_url(api_settings.broker_url)
    before = queue.llen(api_settings.queue)
    resent = requeue_unsent_jobs(api_settings)
    assert not {str(being_sent), str(sent), str(running)} & set(resent)
    assert queue.llen(api_settings.queue) == before + len(resent)  # a real message per job, on Redis
    # sent by this sweep (or by a running worker's, if one shares this database)
    assert row(migrated_pg, unsent).enqueued_at is not None and row(migrated_pg, being_sent).enqueued_at is None
    assert str(unsent) not in requeue_unsent_jobs(api_settings)  # sent once, not on every sweep
    with session_scope(migrated_pg) as session:  # leave nothing for a later worker's sweep to run
        session.get(Job, being_sent).status = "cancelled"
