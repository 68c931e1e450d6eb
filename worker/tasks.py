"""The one task: run a protection job. Redelivery safe: see worker.runner.execute."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from worker.celery_app import app, settings
from worker.runner import Outcome, execute

log = logging.getLogger("mmguard.worker")

RUN_JOB_TASK = "mmguard.run_job"


@app.task(name=RUN_JOB_TASK, bind=True, max_retries=None, ignore_result=True)
def run_job(self, job_id: str) -> str:  # noqa: ANN001 - celery's bound task
    try:
        outcome = execute(job_id, settings)
    except OperationalError as exc:  # database unreachable while claiming: try again shortly
        log.warning("job %s: database unavailable (%s); retrying", job_id, exc)
        raise self.retry(exc=exc, countdown=10, max_retries=60) from exc
    if outcome is Outcome.BUSY:
        # another worker holds a claim that still looks live; look again once it would have gone stale
        log.info("job %s is claimed by a live worker; checking again later", job_id)
        raise self.retry(countdown=settings.stale_after_seconds + 1)
    log.info("job %s: %s", job_id, outcome.value)
    return outcome.value
