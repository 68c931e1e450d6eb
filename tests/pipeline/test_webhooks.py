"""Webhooks: Standard Webhooks signatures, SSRF refusals, and delivery (with a retry) from the
embedded server to a local receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from service.helpers import TINY_CONFIG, wait_for

from app.core.config import Settings
from app.webhooks import TargetRefused, check_target, headers, new_secret, sign, verify
from mmguard.client import Client, InvalidRequest

from .support import Receiver


def standard_webhooks_verify(secret: str, msg_headers: dict[str, str], body: bytes) -> bool:
    """The receiver side written from the spec, independently of app.webhooks."""
    h = {k.lower(): v for k, v in msg_headers.items()}
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(s == f"v1,{expected}" for s in h["webhook-signature"].split())


def test_signature_matches_the_spec_example() -> None:
    # the example in the Standard Webhooks specification
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    fresh = new_secret()
    assert fresh.startswith("whsec_") and len(base64.b64decode(fresh[6:])) == 24
    sent = headers(fresh, "msg_1", int(time.time()), body)
    assert verify(fresh, sent, body) and standard_webhooks_verify(fresh, sent, body.encode())
    assert not verify(fresh, sent, body + " ") and not verify(new_secret(), sent, body)
    assert not verify(fresh, {**sent, "webhook-timestamp": str(int(time.time()) - 3600)}, body)


@pytest.mark.parametrize("url", [
    "http://127.0.0.2/hook",            # loopback, not the allow-listed 127.0.0.1
    "http://[::1]/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.10:8080/hook",
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data",  # cloud metadata: link-local
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://100.64.0.1/hook",           # carrier-grade NAT
    "http://[::ffff:10.0.0.1]/hook",    # IPv4-mapped private
    "http://2130706434/hook",           # 127.0.0.2 in decimal
    "http://224.0.0.1/hook",            # multicast
    "ftp://93.184.216.34/hook",
    "http://user:pw@93.184.216.34/hook",
    "not a url",
])
def test_ssrf_targets_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_target(url, Settings(webhook_allow=["127.0.0.1"]))


def test_allow_list_names_hosts_and_networks() -> None:
    check_target("http://93.184.216.34/hook", Settings())  # a public address needs no allow-list
    with pytest.raises(TargetRefused):
        check_target("http://127.0.0.1:9000/hook", Settings())
    check_target("http://127.0.0.1:9000/hook", Settings(webhook_allow=["127.0.0.1"]))
    check_target("http://10.1.2.3/hook", Settings(webhook_allow=["10.0.0.0/8"]))
    check_target("http://hooks.internal/x", Settings(webhook_allow=["hooks.internal"]))  # by name, unresolved


@pytest.mark.slow
def test_job_end_event_delivered_signed_and_retried(embedded: dict, tiny_zip: Path) -> None:
    receiver = Receiver(statuses=[500, 204])  # the first attempt fails: the worker retries
    try:
        with Client(embedded["url"], embedded["key"]) as mm:
            with pytest.raises(InvalidRequest) as refused:
                mm.create_webhook("http://169.254.169.254/latest/meta-data")
            assert "private, loopback or link-local" in refused.value.detail
            hook = mm.create_webhook(receiver.url, description="pipeline test")
            assert hook.secret and hook.secret.startswith("whsec_")
            assert hook.id in [w.id for w in mm.list_webhooks()] and mm.list_webhooks()[0].secret is None

            dataset = mm.upload_dataset(tiny_zip)
            job = mm.wait(mm.create_job(dataset.id, preset="fast", config=TINY_CONFIG).id, timeout=300, interval=0.2)
            wait_for(lambda: len(receiver.requests) >= 2, 60, 0.1, "the webhook's second attempt")
            deliveries = wait_for(lambda: [d for d in mm.deliveries(hook.id) if d.status != "pending"], 30, 0.2,
                                  "the delivery log")
            mm.delete_webhook(hook.id)
    finally:
        receiver.close()

    first, second = receiver.requests[:2]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == f"msg_{job.id.replace('-', '')}_succeeded"
    for request in (first, second):
        assert standard_webhooks_verify(hook.secret, request["headers"], request["body"])
        assert abs(int(request["headers"]["webhook-timestamp"]) - time.time()) < 120
    event = json.loads(second["body"])
    assert event["type"] == "job.succeeded" and event["data"]["job_id"] == job.id
    assert event["data"]["status"] == "succeeded" and event["data"]["dataset_id"] == dataset.id
    assert event["data"]["links"]["archive"].endswith(f"/api/v1/jobs/{job.id}/archive")
    (delivery,) = deliveries
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 2, 204)
    assert delivery.event_type == "job.succeeded" and delivery.job_id == job.id
