"""Recovery: re-send jobs whose worker died mid-run (their message may be gone, e.g. with the
embedded filesystem queue) and webhook deliveries whose message never reached the queue (the broker
was down when the job ended). Run at start-up and by every worker's periodic sweep; the worker's
claim logic and deliver()'s status check keep both safe against work that is still alive."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update

from app.core.claims import claim_is_live
from app.core.config import Settings
from app.core.db import session_scope
from app.core.queue import enqueue_job
from app.models import Job, WebhookDelivery, utcnow

log = logging.getLogger("mmguard")


def requeue_orphans(settings: Settings) -> list[str]:
    with session_scope(settings.sqlalchemy_url) as session:
        running = session.scalars(select(Job).where(Job.status == "running")).all()
        orphans = [str(job.id) for job in running if not claim_is_live(job, settings)]
    for job_id in orphans:
        log.info("re-queueing job %s: its worker is gone", job_id)
        enqueue_job(settings, job_id)
    return orphans


def requeue_queued_jobs(settings: Settings) -> list[str]:
    """Embedded queue only, at a worker's start: re-send every `queued` job. The filesystem queue
    keeps a taken message only in the consuming worker's memory until it is acknowledged, so a
    worker killed hard (OOM, SIGKILL) after taking a message and before claiming its job leaves that
    job `queued` with no message anywhere. A second message for a job whose first one is still in
    the folder is harmless: the claim runs the job once and the other message finds it done."""
    if not settings.embedded_broker:
        return []  # Redis keeps unacknowledged messages and re-delivers them itself
    with session_scope(settings.sqlalchemy_url) as session:
        queued = [str(job_id) for job_id in session.scalars(select(Job.id).where(Job.status == "queued"))]
    for job_id in queued:
        log.info("re-sending queued job %s (its message may have died with a worker)", job_id)
        enqueue_job(settings, job_id)
    return queued


def requeue_unsent_jobs(settings: Settings) -> list[str]:
    """`queued` jobs whose message never reached the broker (the API process stopped between storing
    the row and sending it: `enqueued_at` is NULL), once older than `stale_after_seconds` -- long
    past the moment a live API sends it. Both brokers: Redis re-delivers only messages it holds. If
    the API did send it and stopped before recording so, the second message is harmless (the claim
    runs the job once), as is the one each of several workers sweeping at the same moment sends."""
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_seconds)
    with session_scope(settings.sqlalchemy_url) as session:
        unsent = list(session.scalars(
            select(Job.id).where(Job.status == "queued", Job.enqueued_at.is_(None), Job.created_at < cutoff)
        ))
    for job_id in unsent:
        log.info("sending job %s: its message never reached the queue", job_id)
        enqueue_job(settings, str(job_id))
        with session_scope(settings.sqlalchemy_url) as session:
            session.execute(update(Job).where(Job.id == job_id, Job.enqueued_at.is_(None)).values(enqueued_at=utcnow()))
    return [str(job_id) for job_id in unsent]


def requeue_stalled_deliveries(settings: Settings) -> list[str]:
    """Pending deliveries overdue by more than an attempt can take: their message was lost."""
    from app.webhooks import enqueue_delivery

    overdue = utcnow() - timedelta(seconds=settings.stale_after_seconds + settings.webhook_timeout_seconds)
    with session_scope(settings.sqlalchemy_url) as session:
        stalled = [str(d) for d in session.scalars(
            select(WebhookDelivery.id).where(WebhookDelivery.status == "pending",
                                             WebhookDelivery.next_attempt_at < overdue)
        )]
    for delivery_id in stalled:
        log.info("re-queueing webhook delivery %s: its message was lost", delivery_id)
        enqueue_delivery(settings, delivery_id)
    return stalled
