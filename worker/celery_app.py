"""The worker-side Celery app: the shared configuration plus the task module and process hooks."""

from __future__ import annotations

import logging
import os
import threading
import time

from celery.signals import worker_process_init, worker_ready

from app.core.config import get_settings
from app.core.db import dispose_engines
from app.core.queue import make_celery

log = logging.getLogger("mmguard.worker")

settings = get_settings()
app = make_celery(settings, include=["worker.tasks", "worker.webhook_tasks"])


@worker_process_init.connect
def _init_child(**_: object) -> None:
    """Runs in each pool child after fork: fresh DB connections, thread cap, engine preload."""
    dispose_engines()
    if settings.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(settings.threads)
    if settings.preload_engine:
        preload_engine()


@worker_ready.connect
def _recover(**_: object) -> None:
    """A (re)started worker re-sends jobs left `running` by a worker that died, `queued` jobs whose
    message never reached the broker, and webhook deliveries whose message was lost (with the
    embedded queue also every `queued` job, whose message a worker killed hard may have taken with
    it), then keeps looking every
    `stale_after_seconds`: with several machines, one that dies mid-job is noticed by the others at
    once, not only when some worker restarts (safe: runner.claim leaves live claims alone)."""
    _requeue_lost_work(at_start=True)
    threading.Thread(target=_sweep_lost_work, name="mmguard-lost-work-sweep", daemon=True).start()


def _requeue_lost_work(at_start: bool = False) -> None:
    from app.recovery import (
        requeue_orphans,
        requeue_queued_jobs,
        requeue_stalled_deliveries,
        requeue_unsent_jobs,
    )

    try:
        requeued = requeue_orphans(settings) + requeue_unsent_jobs(settings)
        if at_start:
            requeued += requeue_queued_jobs(settings)
        resent = requeue_stalled_deliveries(settings)
    except Exception as exc:  # database or broker down: the next sweep tries again
        log.warning("could not look for orphaned jobs or webhook deliveries: %s", exc)
        return
    if requeued or resent:
        log.info("re-queued %d job(s) (orphaned or never sent), %d webhook delivery(ies)", len(requeued), len(resent))


def _sweep_lost_work() -> None:
    while True:
        time.sleep(max(settings.stale_after_seconds, 1.0))
        _requeue_lost_work()


def preload_engine() -> None:
    try:
        import mmguard_core.pipeline  # noqa: F401 - imports torch and the model code, in the child only
    except Exception as exc:  # the first job reports a real error if the engine is unusable
        log.warning("engine preload failed: %s", exc)
