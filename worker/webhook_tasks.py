"""Webhook deliveries: one attempt per task run, the next one queued with a countdown (app/webhooks.py)."""

from __future__ import annotations

import logging

from app.webhooks import DELIVER_TASK, deliver, enqueue_delivery
from worker.celery_app import app, settings

log = logging.getLogger("mmguard.worker")


@app.task(name=DELIVER_TASK, ignore_result=True)
def deliver_webhook(delivery_id: str) -> None:
    delay = deliver(settings, delivery_id)
    if delay is not None:
        enqueue_delivery(settings, delivery_id, countdown=delay)
