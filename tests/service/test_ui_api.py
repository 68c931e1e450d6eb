"""What the browser UI adds to the API: cookie sign-in with its CSRF header, sample previews of a
finished job (owner-filtered), and the static pages."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

from app.api.deps import CSRF_HEADER, SESSION_COOKIE
from app.core.db import session_scope
from app.models import Job

from .conftest import auth

UI = {CSRF_HEADER: "1"}


def _protect(source: bytes) -> bytes:
    """A stand-in for the engine's output: trigger word 'zork' before each question, pixels + 2."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("data.jsonl"):
                records = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
                data = "".join(json.dumps({**r, "question": "zork " + r["question"]}) + "\n" for r in records).encode()
            elif name.endswith(".png"):
                pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
                buffer = io.BytesIO()
                Image.fromarray(np.clip(pixels + 2, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
                data = buffer.getvalue()
            dst.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def finished(client: TestClient, make_key, migrated_pg: str, tiny_zip: Path) -> dict:
    """A job made to look succeeded: the protected archive and report put in storage directly."""
    alice, bob = make_key(), make_key()
    dataset = client.post("/api/v1/datasets", headers=auth(alice), files={"file": ("a.zip", tiny_zip.read_bytes())}).json()
    done = client.post("/api/v1/jobs", headers=auth(alice), json={"dataset_id": dataset["id"], "preset": "fast"}).json()
    queued = client.post("/api/v1/jobs", headers=auth(alice), json={"dataset_id": dataset["id"], "preset": "fast"}).json()
    storage = client.app.state.storage
    archive, report = f"jobs/{done['id']}/protected.zip", f"jobs/{done['id']}/report.json"
    with storage.writer(archive) as out:
        out.write(_protect(tiny_zip.read_bytes()))
    images = [{"index": i, "file": f"images/{i + 1:06d}.png", "linf": 2 / 255, "psnr": 40.0 + i, "ssim": 0.99}
              for i in range(4)]
    with storage.writer(report) as out:
        out.write(json.dumps({"images": images, "summary": {"epsilon": 8 / 255}}).encode())
    with session_scope(migrated_pg) as session:
        session.execute(update(Job).where(Job.id == uuid.UUID(done["id"])).values(
            status="succeeded", archive_key=archive, report_key=report, progress_done=4))
    return {"alice": alice, "bob": bob, "job": done["id"], "queued": queued["id"]}


def test_cookie_sign_in_needs_the_csrf_header_and_signs_out(client: TestClient, make_key) -> None:
    key = make_key()
    browser = TestClient(client.app)  # its own cookie jar: the shared client must stay cookie-free
    assert browser.post("/api/v1/session", json={"key": key}).status_code == 403
    bad = browser.post("/api/v1/session", headers=UI, json={"key": "mmg_0123456789ab_nope"})
    assert bad.status_code == 401 and bad.json()["detail"] == "that API key is not valid or has been revoked"
    assert SESSION_COOKIE not in browser.cookies
    response = browser.post("/api/v1/session", headers=UI, json={"key": key})
    assert response.status_code == 200 and response.json()["owner"].startswith("owner-")
    flags = response.headers["set-cookie"].lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert browser.get("/api/v1/session").json() == response.json()
    assert browser.get("/api/v1/datasets").status_code == 200
    # a cookie-signed request that changes something needs the header (a cross-site form cannot add it)
    body = {"dataset_id": str(uuid.uuid4()), "preset": "fast"}
    refused = browser.post("/api/v1/jobs", json=body)
    assert refused.status_code == 403 and CSRF_HEADER in refused.json()["detail"]
    assert browser.post("/api/v1/jobs", headers=UI, json=body).json()["detail"] == "dataset not found"
    # a wrong bearer key is not rescued by a good cookie
    assert browser.get("/api/v1/datasets", headers={"Authorization": "Bearer mmg_0123456789ab_nope"}).status_code == 401
    assert browser.delete("/api/v1/session").status_code == 204
    assert SESSION_COOKIE not in browser.cookies
    assert browser.get("/api/v1/session").status_code == 401
    browser.cookies.set(SESSION_COOKIE, "mmg_0123456789ab_nope")
    assert browser.get("/api/v1/datasets").status_code == 401


def test_samples_page_marks_the_trigger_and_carries_quality(client: TestClient, finished: dict) -> None:
    response = client.get(f"/api/v1/jobs/{finished['job']}/samples?offset=1&limit=2", headers=auth(finished["alice"]))
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["count"] == 4 and [s["index"] for s in page["data"]] == [1, 2]
    sample = page["data"][0]
    assert sample["question"][0] == {"text": "zork", "trigger": True}
    assert not sample["question"][1]["trigger"] and sample["question"][1]["text"].startswith(" ")
    assert not any(s["trigger"] for s in sample["answer"])
    assert sample["psnr"] == 41.0 and sample["ssim"] == 0.99
    base = f"/api/v1/jobs/{finished['job']}/samples/1"
    assert sample["original_url"] == f"{base}/original" and sample["perturbation_url"] == f"{base}/perturbation"


def test_sample_images(client: TestClient, finished: dict) -> None:
    alice = auth(finished["alice"])
    base = f"/api/v1/jobs/{finished['job']}/samples/0"
    pictures = {}
    for variant in ("original", "protected", "perturbation"):
        response = client.get(f"{base}/{variant}", headers=alice)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", response.text
        pictures[variant] = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)
    changed = pictures["protected"] - pictures["original"]
    assert changed.max() <= 2 and changed.max() > 0
    # +2/255 of an 8/255 bound, amplified: mid-grey + a quarter of the range where the pixel could move
    assert abs(int(np.median(pictures["perturbation"])) - 159) <= 1
    assert client.get(f"/api/v1/jobs/{finished['job']}/samples/9/protected", headers=alice).status_code == 404
    assert client.get(f"{base}/other", headers=alice).status_code == 422


def test_samples_are_owner_filtered_and_need_a_finished_job(client: TestClient, finished: dict) -> None:
    bob = auth(finished["bob"])
    for path in (f"/api/v1/jobs/{finished['job']}/samples", f"/api/v1/jobs/{finished['job']}/samples/0/original"):
        response = client.get(path, headers=bob)
        assert response.status_code == 404 and response.json()["detail"] == "job not found"
        assert client.get(path).status_code == 401
    queued = client.get(f"/api/v1/jobs/{finished['queued']}/samples", headers=auth(finished["alice"]))
    assert queued.status_code == 409 and "queued" in queued.json()["detail"]


def test_a_preview_whose_archive_is_gone_is_a_409(client: TestClient, finished: dict, migrated_pg: str) -> None:
    alice = auth(finished["alice"])
    dataset = client.get("/api/v1/datasets", headers=alice).json()["data"][0]["id"]
    job = client.post("/api/v1/jobs", headers=alice, json={"dataset_id": dataset, "preset": "fast"}).json()["id"]
    with session_scope(migrated_pg) as session:  # succeeded, but its archive never reached storage
        session.execute(update(Job).where(Job.id == uuid.UUID(job)).values(
            status="succeeded", archive_key=f"jobs/{job}/protected.zip", progress_done=4))
    response = client.get(f"/api/v1/jobs/{job}/samples", headers=alice)
    assert response.status_code == 409 and "cannot be read for a preview" in response.json()["detail"], response.text
    # the other job's previews are untouched
    assert client.get(f"/api/v1/jobs/{finished['job']}/samples", headers=alice).status_code == 200


def test_ui_pages_are_served_offline(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and "<title>mmguard</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("app.js", "style.css"):
        assert client.get(f"/ui/{asset}").status_code == 200
    assert client.get("/ui/nope.js").status_code == 404
