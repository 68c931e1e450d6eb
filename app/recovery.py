"""Start-up recovery: re-send jobs whose worker died mid-run (their message may be gone, e.g. with
the embedded filesystem queue). The worker's claim logic keeps this safe against live claims."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.core.claims import claim_is_live
from app.core.config import Settings
from app.core.db import session_scope
from app.core.queue import enqueue_job
from app.models import Job

log = logging.getLogger("mmguard")


def requeue_orphans(settings: Settings) -> list[str]:
    with session_scope(settings.sqlalchemy_url) as session:
        running = session.scalars(select(Job).where(Job.status == "running")).all()
        orphans = [str(job.id) for job in running if not claim_is_live(job, settings)]
    for job_id in orphans:
        log.info("re-queueing job %s: its worker is gone", job_id)
        enqueue_job(settings, job_id)
    return orphans
