"""Webhooks: job-end events POSTed to the URLs an owner registered, signed as in Standard Webhooks 1.0.

Each event is one `webhook_deliveries` row per endpoint holding the exact body; a Celery task
(`mmguard.deliver_webhook`, worker/webhook_tasks.py) sends it with

    webhook-id:        msg_<job id>_<status>   (the same on every attempt: receivers dedupe on it)
    webhook-timestamp: unix seconds of this attempt
    webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>

where the secret is `whsec_<base64 key>` and the HMAC key is the decoded part. A non-2xx answer or
a transport error is retried after MMGUARD_WEBHOOK_RETRY_DELAYS; every attempt updates the row
(the delivery log of GET /webhooks/{id}/deliveries).

SSRF: targets whose host resolves to a private, loopback, link-local, multicast or otherwise
non-global address are refused, at registration and again at each delivery, unless
MMGUARD_WEBHOOK_ALLOW names the host or a network holding the address. Redirects are not followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import select

from app.core.config import Settings
from app.core.db import session_scope
from app.models import FINAL_STATUSES, Job, WebhookDelivery, WebhookEndpoint, utcnow

log = logging.getLogger("mmguard.webhooks")

DELIVER_TASK = "mmguard.deliver_webhook"
SECRET_PREFIX = "whsec_"
USER_AGENT = "mmguard-webhooks/1"


class TargetRefused(ValueError):
    """The URL may not be called (scheme, credentials, or a non-public address not allow-listed)."""


# -- signing (Standard Webhooks 1.0) ---------------------------------------------------------
def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(secret: str, headers_in: dict[str, str], body: str, tolerance: int = 300) -> bool:
    """A receiver's check (used by the tests; the docs show the same in a few lines)."""
    h = {k.lower(): v for k, v in headers_in.items()}
    try:
        timestamp = int(h["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, h.get("webhook-id", ""), timestamp, body).split(",", 1)[1]
    return any(
        hmac.compare_digest(sig.split(",", 1)[1], expected)
        for sig in h.get("webhook-signature", "").split()
        if sig.startswith("v1,")
    )


# -- SSRF --------------------------------------------------------------------------------------
def _allowed_networks(settings: Settings) -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names: set[str] = set()
    networks = []
    for entry in settings.webhook_allow:
        entry = entry.strip()
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            if entry:
                names.add(entry.lower().rstrip("."))
    return names, networks


def check_target(url: str, settings: Settings) -> None:
    """Raise TargetRefused unless `url` is http(s) to a public address or an allow-listed one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must be http:// or https://")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("credentials in the URL are not allowed; verify the signature instead")
    names, networks = _allowed_networks(settings)
    if host.lower() in names:
        return
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} cannot be resolved: {exc}") from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_global and not ip.is_multicast:
            continue
        if any(ip.version == net.version and ip in net for net in networks):
            continue
        raise TargetRefused(
            f"the host {host!r} resolves to {ip}, a private, loopback or link-local address; "
            "name it in MMGUARD_WEBHOOK_ALLOW to allow it"
        )


# -- events ------------------------------------------------------------------------------------
def _links(settings: Settings, job: Job) -> dict[str, str]:
    base = (settings.public_url or "").rstrip("/") + settings.api_prefix
    links = {"job": f"{base}/jobs/{job.id}"}
    if job.status == "succeeded":
        links.update(archive=f"{base}/jobs/{job.id}/archive", report=f"{base}/jobs/{job.id}/report")
    return links


def event_body(settings: Settings, job: Job) -> str:
    event = {
        "type": f"job.{job.status}",
        "timestamp": utcnow().isoformat(),
        "data": {
            "job_id": str(job.id),
            "dataset_id": str(job.dataset_id) if job.dataset_id else None,
            "status": job.status,
            "error": job.error,
            "links": _links(settings, job),
        },
    }
    return json.dumps(event, separators=(",", ":"))


def job_finished(settings: Settings, job_id: uuid.UUID | str) -> list[uuid.UUID]:
    """Record one delivery per active endpoint of the job's owner and queue them. Never raises: a
    webhook problem must not disturb the job's own bookkeeping."""
    try:
        created: list[uuid.UUID] = []
        with session_scope(settings.sqlalchemy_url) as session:
            job = session.get(Job, uuid.UUID(str(job_id)))
            if job is None or job.status not in FINAL_STATUSES:
                return []
            endpoints = session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.owner_id == job.owner_id, WebhookEndpoint.active)
            ).all()
            msg_id = f"msg_{job.id.hex}_{job.status}"
            for endpoint in endpoints:
                exists = session.scalar(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.msg_id == msg_id
                    )
                )
                if exists is not None:  # a redelivered job message: the event was recorded already
                    continue
                delivery = WebhookDelivery(
                    endpoint_id=endpoint.id, owner_id=job.owner_id, msg_id=msg_id, event_type=f"job.{job.status}",
                    job_id=job.id, payload=event_body(settings, job), next_attempt_at=utcnow(),
                )
                session.add(delivery)
                session.flush()
                created.append(delivery.id)
        for delivery_id in created:
            enqueue_delivery(settings, delivery_id)
        return created
    except Exception:
        log.exception("job %s: could not record or queue webhook events", job_id)
        return []


def enqueue_delivery(settings: Settings, delivery_id: uuid.UUID | str, countdown: float = 0) -> None:
    from app.core.queue import get_celery

    queue = settings.webhook_queue or settings.queue
    get_celery(settings).send_task(
        DELIVER_TASK, args=[str(delivery_id)], queue=queue, routing_key=queue, countdown=countdown or None,
        retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )


# a retry message may run a little before its recorded time (clocks of two machines)
DUE_SLACK = timedelta(seconds=5)


def deliver(settings: Settings, delivery_id: uuid.UUID | str) -> float | None:
    """One attempt; returns the delay before the next one, or None when the delivery is settled."""
    import httpx

    with session_scope(settings.sqlalchemy_url) as session:
        delivery = session.get(WebhookDelivery, uuid.UUID(str(delivery_id)), with_for_update=True)
        if delivery is None or delivery.status != "pending":
            return None
        now = utcnow()
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + DUE_SLACK:
            return None  # another run holds this attempt or a later one is scheduled: a duplicate message
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        if endpoint is None or not endpoint.active:
            delivery.status, delivery.last_error, delivery.updated_at = "failed", "the endpoint was removed", now
            return None
        url, secret, body, msg_id = endpoint.url, endpoint.secret, delivery.payload, delivery.msg_id
        # lease: until this attempt is recorded, a second message for the delivery (the recovery sweep
        # re-sends overdue ones) finds it not due and leaves it alone
        delivery.next_attempt_at = now + timedelta(seconds=settings.webhook_timeout_seconds) + DUE_SLACK

    code: int | None = None
    error: str | None = None
    final = False
    try:
        check_target(url, settings)
        sent = headers(secret, msg_id, int(time.time()), body)
        with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False) as client:
            response = client.post(url, content=body.encode(), headers=sent)
        code = response.status_code
        if not 200 <= code < 300:
            error = f"HTTP {code}: {response.text[:200]}"
    except TargetRefused as exc:
        error, final = f"target refused: {exc}", True
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]

    delays = settings.webhook_retry_delays
    with session_scope(settings.sqlalchemy_url) as session:
        delivery = session.get(WebhookDelivery, uuid.UUID(str(delivery_id)))
        if delivery is None:
            return None
        now = utcnow()
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error, delivery.updated_at = code, error, now
        if error is None:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = "succeeded", now, None
            return None
        if final or delivery.attempts > len(delays):
            delivery.status, delivery.next_attempt_at = "failed", None
            log.warning("webhook %s to %s failed for good: %s", msg_id, url, error)
            return None
        delay = float(delays[delivery.attempts - 1])
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        log.info("webhook %s to %s: %s; retrying in %.1fs", msg_id, url, error, delay)
        return delay
