"""The owner's whole walk-through in a real browser: sign in, upload (validation report), start a
job with the intensity slider and advanced options, watch it, open the job page, download; plus a
bad key, a rejected upload, cancelling and signing out."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.service.helpers import TINY_CONFIG, dataset_zip, maps_torch

pytestmark = pytest.mark.slow
JOB_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dataset_zip(tmp_path_factory.mktemp("ui-data"), n=4)


def sign_in(page, key: str) -> None:  # noqa: ANN001
    page.goto("/")
    page.locator("#page-signin").wait_for()
    page.fill("#key", key)
    page.click("#signin")
    page.locator("#page-datasets").wait_for()


def no_stack_trace(page) -> None:  # noqa: ANN001
    text = page.locator("body").inner_text()
    assert "Traceback" not in text and 'File "' not in text, text


def test_bad_key_is_refused_with_a_sentence(page, server: dict, artifacts: Path) -> None:  # noqa: ANN001
    page.goto("/")
    assert page.url.endswith("/ui/")
    page.locator("#page-signin").wait_for()
    page.screenshot(path=str(artifacts / "01-sign-in.png"))
    page.fill("#key", "mmg_0123456789ab_not-the-right-secret")
    page.click("#signin")
    error = page.locator("#error")
    error.wait_for()
    assert error.inner_text() == "That API key is not valid or has been revoked. Check it and try again."
    assert page.locator("#page-datasets").is_hidden()
    assert not page.context.cookies()
    no_stack_trace(page)


def test_owner_flow_end_to_end(page, server: dict, tiny_zip: Path, artifacts: Path, tmp_path: Path) -> None:  # noqa: ANN001
    sign_in(page, server["key"])
    assert page.locator("#owner").inner_text() == "signed in as local"
    cookie = next(c for c in page.context.cookies() if c["name"] == "mmguard_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "mmguard_session" not in page.evaluate("document.cookie")  # page scripts cannot read the key
    assert server["key"] not in page.content()

    # upload with the file picker: progress bar, then the validation report, then the job form
    assert page.locator("#start-form").is_hidden()
    page.set_input_files("#file", str(tiny_zip))
    page.locator("#validation.accepted").wait_for()
    assert page.locator("#upload-progress").evaluate("p => p.value") == 100
    assert page.locator("#validation-samples").inner_text() == "4"
    assert page.locator("#validation-format").inner_text().startswith("jsonl")
    assert page.locator("#start-form").is_visible()
    # the list refreshes after the validation report shows (app.js: renderAccepted, then refreshDatasets)
    page.locator("#datasets-table tbody tr").first.wait_for()
    assert page.locator("#datasets-table tbody tr").count() == 1

    # intensity slider (keyboard), each stop with its trade-off note
    page.focus("#preset")
    page.keyboard.press("ArrowRight")
    assert page.locator("#preset-name").inner_text() == "strong"
    assert page.locator("#preset-note").inner_text().startswith("Strong:")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert page.locator("#preset-name").inner_text() == "fast"
    assert "CPU" in page.locator("#preset-note").inner_text()

    # advanced options are folded away until opened
    assert page.locator("#opt-epsilon").is_hidden()
    page.click("#advanced summary")
    page.fill("#opt-epsilon", "8/255")
    page.fill("#opt-trigger-length", "2")
    page.select_option("#opt-trigger-placement", "instruction")
    page.select_option("#opt-trigger-vocabulary", "distinct")
    page.fill("#opt-surrogates", "zoo:llava")
    page.select_option("#opt-verify", "on")
    page.select_option("#opt-noise", "4")
    extra = {k: v for k, v in TINY_CONFIG.items() if k != "surrogates"}
    page.fill("#opt-extra", json.dumps({**extra, "verify_victim": "cnn"}))
    page.screenshot(path=str(artifacts / "02-validated-upload.png"), full_page=True)
    page.click("#start")

    # the job page follows the job until it succeeds
    page.wait_for_url(re.compile(r".*#/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    status = page.locator("#job-status")
    seen = {status.inner_text()}
    page.wait_for_function("""() => { const s = document.getElementById('job-status').textContent;
        window.__seen = (window.__seen || new Set()).add(s); return s === 'succeeded' || s === 'failed'; }""",
                           polling=100, timeout=JOB_TIMEOUT_MS)
    seen |= set(page.evaluate("[...window.__seen]"))
    assert status.inner_text() == "succeeded", page.locator("#job-error").inner_text()
    assert seen & {"queued", "running"}, seen

    # results: summary, histograms, sample grid with three images each and the trigger marked
    page.locator("#samples .sample").first.wait_for()
    assert page.locator("#samples .sample").count() == 4
    assert page.locator("#hist-psnr svg rect").count() == 10 or page.locator("#hist-psnr").inner_text()
    assert page.locator("#hist-ssim svg rect").count() == 10
    assert "/255" in page.locator("#summary").inner_text()
    # the worker machine's device (MMGUARD_DEVICE=auto: the GPU where there is one)
    assert page.locator("#summary dt:text-is('computed on') + dd").inner_text() in ("cpu", "cuda")
    page.wait_for_function("""() => [...document.querySelectorAll('#samples img')].length === 12 &&
        [...document.querySelectorAll('#samples img')].every(i => i.complete && i.naturalWidth > 0)""")
    first = page.locator("#samples .sample").first
    assert first.locator("mark.trigger").count() >= 1
    assert "PSNR" in first.locator(".metrics").inner_text()
    # verification was asked for, but four samples cannot be split into train and held-out test
    assert "too few" in page.locator("#verification-reason").inner_text()
    page.screenshot(path=str(artifacts / "03-job-page.png"), full_page=True)
    no_stack_trace(page)

    # downloads: the protected archive and the report
    with page.expect_download() as archive_info:
        page.click("#download-archive")
    archive = tmp_path / "protected.zip"
    archive_info.value.save_as(archive)
    with zipfile.ZipFile(archive) as handle:
        names = handle.namelist()
        assert "data.jsonl" in names and sum(n.endswith(".png") for n in names) == 4
    with page.expect_download() as report_info:
        page.click("#download-report")
    report = json.loads(Path(report_info.value.path()).read_text())
    assert report["job"]["id"] == job_id and len(report["report"]["images"]) == 4
    assert report["job"]["config"]["sample_noise_scale"] == 4  # the "smooth" image-noise choice

    # jobs list: live status and a cancel button for a job still running
    page.goto("/ui/#/datasets")
    page.locator("#datasets-table tbody tr").first.wait_for()
    page.click("#datasets-table button:has-text('Protect')")
    assert page.locator("#advanced").evaluate("d => d.open")  # still unfolded from the first job
    page.fill("#opt-surrogates", "zoo:llava")
    page.select_option("#opt-verify", "off")
    page.fill("#opt-extra", json.dumps({**extra, "shared_steps": 400}))
    page.click("#start")
    page.wait_for_url(re.compile(r".*#/jobs/[0-9a-f-]{36}$"))
    second = page.url.rsplit("/", 1)[1]
    assert second != job_id
    page.click("#nav-jobs")
    row = page.locator(f"#jobs-table tr[data-id='{second}']")
    row.wait_for()
    assert page.locator(f"#jobs-table tr[data-id='{job_id}'] .status").inner_text() == "succeeded"
    page.screenshot(path=str(artifacts / "04-jobs.png"), full_page=True)
    row.locator("button:has-text('Cancel')").click()
    page.locator(f"#jobs-table tr[data-id='{second}'][data-status='cancelled']").wait_for(timeout=60_000)
    assert row.locator("button:has-text('Cancel')").count() == 0

    assert not maps_torch(server["proc"].popen.pid)  # previews and pages kept torch out of the API process

    # signing out forgets the cookie
    page.click("#sign-out")
    page.locator("#page-signin").wait_for()
    assert page.locator("#notice").inner_text() == "You are signed out."
    assert not [c for c in page.context.cookies() if c["name"] == "mmguard_session"]
    page.reload()
    page.locator("#page-signin").wait_for()


def test_job_page_shows_the_verification_table(page, server: dict, artifacts: Path,  # noqa: ANN001
                                               tmp_path: Path) -> None:
    """A job with enough samples for the held-out check: the table of protection per countermeasure."""
    auth = {"Authorization": f"Bearer {server['key']}"}
    archive = dataset_zip(tmp_path, n=48, seed=21)
    with open(archive, "rb") as handle:
        dataset = httpx.post(f"{server['origin']}/api/v1/datasets", headers=auth, timeout=60,
                             files={"file": (archive.name, handle, "application/zip")}).raise_for_status().json()
    config = {**TINY_CONFIG, "verify": True, "verify_victim": "cnn", "verify_epochs": 2.0, "verify_seeds": 2}
    job = httpx.post(f"{server['origin']}/api/v1/jobs", headers=auth, timeout=30,
                     json={"dataset_id": dataset["id"], "preset": "fast", "config": config}).raise_for_status().json()
    sign_in(page, server["key"])
    page.goto(f"/ui/#/jobs/{job['id']}")
    page.locator("#verification-table").wait_for(timeout=JOB_TIMEOUT_MS)
    report = httpx.get(f"{server['origin']}/api/v1/jobs/{job['id']}/report", headers=auth,
                       timeout=30).raise_for_status().json()["report"]["verification"]
    rows = page.locator("#verification-table tbody tr")
    assert rows.count() == 3  # no countermeasure, JPEG q75, downscale
    assert rows.nth(1).inner_text().startswith("JPEG q75")
    expected = "—" if report["protection"] is None else f"{report['protection'] * 100:.0f} %"
    assert rows.nth(0).locator(".protection").inner_text() == expected
    assert f"{report['train_samples']} samples" in page.locator("#verification").inner_text()
    per_seed = ", ".join("—" if r["protection"] is None else f"{r['protection'] * 100:.0f} %" for r in report["runs"])
    assert f"Accuracies are means of 2 victim seeds; protection per seed: {per_seed}." in page.locator("#verification").inner_text()
    page.screenshot(path=str(artifacts / "05-verification.png"), full_page=True)
    no_stack_trace(page)


def _bad_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.jsonl", '{"image": "missing.png", "question": "what?", "answer": "red"}\n{not json\n')
    return buffer.getvalue()


def test_rejected_upload_by_drag_and_drop_lists_problems(page, server: dict, artifacts: Path) -> None:  # noqa: ANN001
    sign_in(page, server["key"])
    data = base64.b64encode(_bad_zip()).decode()
    transfer = page.evaluate_handle("""(b64) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer(); dt.items.add(new File([bytes], 'broken.zip', {type: 'application/zip'}));
        return dt; }""", data)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.locator("#validation.rejected").wait_for()
    text = page.locator("#validation").inner_text()
    assert "rejected" in text and "data.jsonl" in text
    assert page.locator("#problems tbody tr").count() >= 1
    assert page.locator("#start-form").is_hidden()  # no job from a rejected dataset
    page.screenshot(path=str(artifacts / "05-rejected-upload.png"), full_page=True)
    # not an archive at all: refused in the page with a sentence
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    assert page.locator("#error").inner_text() == "Only .zip and plain .tar archives can be uploaded; notes.txt is neither."
    no_stack_trace(page)
