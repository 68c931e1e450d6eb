"""The Celery application shared by the API (which only sends) and the workers (which run).

Nothing here imports torch or the task code: the API sends the task by name.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from app.core import fsqueue
from app.core.config import Settings

fsqueue.register()

RUN_JOB_TASK = "mmguard.run_job"


def make_celery(settings: Settings, *, include: list[str] | None = None) -> Celery:
    if settings.embedded_broker:
        settings.ensure_dirs()
    app = Celery("mmguard", broker=settings.celery_broker_url, include=include or [])
    app.conf.update(
        broker_transport_options=settings.broker_transport_options(),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_queues=[Queue(settings.queue, routing_key=settings.queue)],
        task_routes={RUN_JOB_TASK: {"queue": settings.queue, "routing_key": settings.queue}},
        task_serializer="json",
        accept_content=["json"],
        # the job row is the source of truth; no result backend
        task_ignore_result=True,
        result_backend=None,
        # long GPU tasks: ack after the run, requeue if the worker process dies, one at a time
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # pool children import torch and the engine at start (MMGUARD_PRELOAD_ENGINE): give them time
        # before Celery declares them dead (its default is 4 s, which a loaded machine can exceed)
        worker_proc_alive_timeout=300,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # the filesystem transport (embedded mode) has no broadcast support worth relying on
        worker_enable_remote_control=not settings.embedded_broker,
        worker_send_task_events=False,
    )
    return app


_clients: dict[int, tuple[Settings, Celery]] = {}


def get_celery(settings: Settings) -> Celery:
    """One sending client per Settings object (kept alive with it)."""
    entry = _clients.get(id(settings))
    if entry is None or entry[0] is not settings:
        entry = _clients[id(settings)] = (settings, make_celery(settings))
    return entry[1]


def enqueue_job(settings: Settings, job_id: str) -> None:
    """Send the run-job message; raises on an unreachable broker after a short retry."""
    get_celery(settings).send_task(
        RUN_JOB_TASK,
        args=[job_id],
        queue=settings.queue,
        routing_key=settings.queue,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
    )


def ping_broker(settings: Settings, timeout: float = 2.0) -> None:
    """Raise if the broker cannot be reached."""
    with get_celery(settings).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
