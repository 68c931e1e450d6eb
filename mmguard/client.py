"""A typed Python client for the mmguard service (httpx; sync).

    from mmguard.client import Client

    with Client("http://127.0.0.1:8000", api_key) as mm:
        dataset = mm.upload_dataset("my-dataset.zip", progress=lambda sent, total: ...)
        job = mm.create_job(dataset.id, preset="balanced")
        job = mm.wait(job.id)                 # backoff polling; raises JobFailed unless it succeeded
        mm.download(job.id, "protected.zip")
        report = mm.report(job.id)

Repeat safety: every POST that creates something carries an `Idempotency-Key` (generated when the
caller gives none) and is retried with the same key after a connection drop or a 502/503/504, so a
retry never creates a second dataset or job. GETs are retried the same way.

Errors are typed (all `MMGuardError`): `AuthError` (401/403), `NotFound` (404), `Conflict` (409),
`InvalidRequest` (422, with `problems`), `TooLarge` (413), `ServerError` (5xx), `Unreachable`
(no answer), `JobFailed` (from `wait`, carries the job); each carries the API's `detail` message.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "AuthError", "Client", "Conflict", "Dataset", "Delivery", "InvalidRequest", "Job", "JobFailed", "MMGuardError",
    "NotFound", "Progress", "ServerError", "TooLarge", "Unreachable", "Webhook",
]

API_PREFIX = "/api/v1"
FINAL = frozenset({"succeeded", "failed", "cancelled"})
ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)
_CHUNK = 256 * 1024


# -- errors ------------------------------------------------------------------------------------
class MMGuardError(Exception):
    """Base of every client error; `detail` is the API's message."""

    def __init__(self, detail: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(detail if status is None else f"{status}: {detail}")
        self.detail = detail
        self.status = status
        self.body = body


class AuthError(MMGuardError):
    """401/403: missing, wrong or revoked API key."""


class NotFound(MMGuardError):
    """404: no such object for this owner."""


class Conflict(MMGuardError):
    """409: e.g. results of a job that has not succeeded, or a dataset with running jobs."""


class InvalidRequest(MMGuardError):
    """422: the request was refused; `problems` lists the dataset's problems when there are any."""

    @property
    def problems(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("problems") or []) if isinstance(self.body, dict) else []


class TooLarge(MMGuardError):
    """413: the upload is larger than the server's limit."""


class ServerError(MMGuardError):
    """5xx: the service or one of its dependencies is down."""


class Unreachable(MMGuardError):
    """No answer from the server (connection refused, dropped, timed out) after the retries."""


class JobFailed(MMGuardError):
    """`wait` saw the job end failed or cancelled; `job` is its last state."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""))
        self.job = job


_BY_STATUS: dict[int, type[MMGuardError]] = {
    401: AuthError, 403: AuthError, 404: NotFound, 409: Conflict, 413: TooLarge, 422: InvalidRequest,
}


# -- typed answers -----------------------------------------------------------------------------
def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    archive_format: str
    size_bytes: int
    sample_count: int
    layout: str
    kind: str
    created_at: datetime | None
    replayed: bool = False  # answered from an earlier request with the same Idempotency-Key
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], replayed: bool = False) -> Dataset:
        return cls(id=data["id"], name=data["name"], archive_format=data["archive_format"],
                   size_bytes=data["size_bytes"], sample_count=data["sample_count"], layout=data["layout"],
                   kind=data["kind"], created_at=_dt(data.get("created_at")), replayed=replayed, raw=data)


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    stage: str


@dataclass(frozen=True)
class Job:
    id: str
    dataset_id: str | None
    status: str
    preset: str | None
    config: dict[str, Any]
    progress: Progress
    error: str | None
    cancel_requested: bool
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    replayed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @classmethod
    def from_json(cls, data: dict[str, Any], replayed: bool = False) -> Job:
        p = data.get("progress") or {}
        return cls(id=data["id"], dataset_id=data.get("dataset_id"), status=data["status"], preset=data.get("preset"),
                   config=data.get("config") or {},
                   progress=Progress(int(p.get("done", 0)), int(p.get("total", 0)), str(p.get("stage", ""))),
                   error=data.get("error"), cancel_requested=bool(data.get("cancel_requested")),
                   created_at=_dt(data.get("created_at")), started_at=_dt(data.get("started_at")),
                   finished_at=_dt(data.get("finished_at")), replayed=replayed, raw=data)


@dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    description: str
    active: bool
    secret: str | None = None  # only in the answer to create_webhook

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Webhook:
        return cls(id=data["id"], url=data["url"], description=data.get("description", ""),
                   active=bool(data.get("active", True)), secret=data.get("secret"))


@dataclass(frozen=True)
class Delivery:
    id: str
    msg_id: str
    event_type: str
    job_id: str | None
    status: str  # pending | succeeded | failed
    attempts: int
    last_status_code: int | None
    last_error: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delivery:
        return cls(id=data["id"], msg_id=data["msg_id"], event_type=data["event_type"], job_id=data.get("job_id"),
                   status=data["status"], attempts=data["attempts"], last_status_code=data.get("last_status_code"),
                   last_error=data.get("last_error"))


# -- the client --------------------------------------------------------------------------------
def _base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


class _UploadBody:
    """A multipart/form-data body streamed from a file, re-iterable (for retries), with progress."""

    def __init__(self, path: Path, progress: ProgressCallback | None) -> None:
        self.path = path
        self.progress = progress
        self.boundary = uuid.uuid4().hex
        name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        self.head = (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n").encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = path.stat().st_size
        self.length = len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        sent = 0
        with open(self.path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                sent += len(chunk)
                yield chunk
                if self.progress:
                    self.progress(sent, self.size)
        yield self.tail


class Client:
    """The mmguard REST API. `url` is the server (with or without /api/v1); `api_key` a key from
    `mmguard admin create-key` (default $MMGUARD_API_KEY)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 0.5, transport: httpx.BaseTransport | None = None) -> None:
        url = url or os.environ.get("MMGUARD_URL")
        if not url:
            raise ValueError("no server URL: pass url= or set MMGUARD_URL")
        api_key = api_key if api_key is not None else os.environ.get("MMGUARD_API_KEY")
        self.base = _base(url)
        self.retries = max(0, retries)
        self.backoff = backoff
        headers = {"user-agent": "mmguard-client/0.1"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        """Send with retries on connection errors and 502/503/504 (safe: GETs, and POSTs carry an
        Idempotency-Key); raise the typed error of a 4xx/5xx answer."""
        attempt = 0
        while True:
            try:
                request = self._http.build_request(method, path, **kwargs)
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise Unreachable(f"cannot reach {self.base}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.status_code in (502, 503, 504) and attempt < self.retries:
                    response.close()
                else:
                    if response.status_code >= 400:
                        if stream:
                            response.read()
                        raise self._error(response)
                    return response
            time.sleep(min(self.backoff * 2**attempt, 10.0))
            attempt += 1

    @staticmethod
    def _error(response: httpx.Response) -> MMGuardError:
        try:
            body = response.json()
            detail = str(body.get("detail", body)) if isinstance(body, dict) else str(body)
        except ValueError:
            body, detail = None, response.text[:500] or response.reason_phrase
        cls = _BY_STATUS.get(response.status_code) or (ServerError if response.status_code >= 500 else MMGuardError)
        return cls(detail, response.status_code, body)

    @staticmethod
    def _replayed(response: httpx.Response) -> bool:
        return response.headers.get("idempotent-replayed") == "true"

    # -- service -----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health").json()

    def presets(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p["config"] for p in self._request("GET", "/presets").json()}

    # -- datasets ----------------------------------------------------------------------------
    def upload_dataset(self, path: str | os.PathLike[str], *, idempotency_key: str | None = None,
                       progress: ProgressCallback | None = None) -> Dataset:
        """Stream a .zip/.tar dataset; `progress(sent, total)` after each chunk. Retried safely."""
        body = _UploadBody(Path(path), progress)
        headers = {
            "content-type": f"multipart/form-data; boundary={body.boundary}",
            "content-length": str(body.length),
            "idempotency-key": idempotency_key or str(uuid.uuid4()),
        }
        response = self._request("POST", "/datasets", content=body, headers=headers)
        return Dataset.from_json(response.json(), self._replayed(response))

    def list_datasets(self, offset: int = 0, limit: int = 50) -> list[Dataset]:
        answer = self._request("GET", "/datasets", params={"offset": offset, "limit": limit}).json()
        return [Dataset.from_json(d) for d in answer["data"]]

    def get_dataset(self, dataset_id: str) -> Dataset:
        return Dataset.from_json(self._request("GET", f"/datasets/{dataset_id}").json())

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/datasets/{dataset_id}")

    # -- jobs --------------------------------------------------------------------------------
    def create_job(self, dataset_id: str, *, preset: str | None = None, config: dict[str, Any] | None = None,
                   idempotency_key: str | None = None) -> Job:
        body: dict[str, Any] = {"dataset_id": str(dataset_id)}
        if preset is not None:
            body["preset"] = preset
        if config is not None:
            body["config"] = config
        response = self._request("POST", "/jobs", json=body,
                                 headers={"idempotency-key": idempotency_key or str(uuid.uuid4())})
        return Job.from_json(response.json(), self._replayed(response))

    def list_jobs(self, status: str | None = None, offset: int = 0, limit: int = 50) -> list[Job]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status:
            params["status"] = status
        return [Job.from_json(j) for j in self._request("GET", "/jobs", params=params).json()["data"]]

    def get_job(self, job_id: str) -> Job:
        return Job.from_json(self._request("GET", f"/jobs/{job_id}").json())

    def cancel_job(self, job_id: str) -> Job:
        return Job.from_json(self._request("POST", f"/jobs/{job_id}/cancel").json())

    def wait(self, job_id: str, *, timeout: float | None = None, interval: float = 0.5, max_interval: float = 10.0,
             on_update: Callable[[Job], None] | None = None, raise_on_failure: bool = True) -> Job:
        """Poll until the job ends (interval grows ×1.5 up to max_interval, reset when progress moves).
        Raises JobFailed when it ended failed/cancelled (unless raise_on_failure=False) and TimeoutError
        past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay, last = interval, None
        while True:
            job = self.get_job(job_id)
            state = (job.status, job.progress)
            if on_update is not None and state != last:
                on_update(job)
            if job.finished:
                if raise_on_failure and job.status != "succeeded":
                    raise JobFailed(job)
                return job
            delay = interval if state != last else min(delay * 1.5, max_interval)
            last = state
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f}s")
            time.sleep(delay)

    def download(self, job_id: str, target: str | os.PathLike[str], *,
                 progress: ProgressCallback | None = None) -> Path:
        """Stream the protected archive (.zip) to `target` (written to a temporary name, then renamed)."""
        target = Path(target)
        partial = target.with_name(target.name + ".part")
        response = self._request("GET", f"/jobs/{job_id}/archive", stream=True)
        try:
            total = int(response.headers.get("content-length", 0))
            done = 0
            with open(partial, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise Unreachable(f"download of job {job_id} interrupted: {exc}") from exc
        finally:
            response.close()
        if total and done != total:
            partial.unlink(missing_ok=True)
            raise Unreachable(f"download of job {job_id} truncated: {done} of {total} bytes")
        partial.replace(target)
        return target

    def report(self, job_id: str) -> dict[str, Any]:
        """{"job": {...}, "report": {per-image L-inf / PSNR / SSIM, config, timings, ...}}"""
        return self._request("GET", f"/jobs/{job_id}/report").json()

    # -- webhooks ----------------------------------------------------------------------------
    def create_webhook(self, url: str, description: str = "") -> Webhook:
        """Register a URL for job-end events; the answer's `secret` (shown once) verifies signatures."""
        return Webhook.from_json(self._request("POST", "/webhooks", json={"url": url, "description": description}).json())

    def list_webhooks(self) -> list[Webhook]:
        return [Webhook.from_json(w) for w in self._request("GET", "/webhooks").json()["data"]]

    def delete_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"/webhooks/{webhook_id}")

    def deliveries(self, webhook_id: str, offset: int = 0, limit: int = 50) -> list[Delivery]:
        answer = self._request("GET", f"/webhooks/{webhook_id}/deliveries", params={"offset": offset, "limit": limit})
        return [Delivery.from_json(d) for d in answer.json()["data"]]
