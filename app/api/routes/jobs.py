"""Protection jobs: create (202 + Location), list, get, cancel, and their results."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app import crud, idempotency, webhooks
from app.api.deps import OffsetQuery, OwnerDep, SessionDep, SettingsDep, StorageDep
from app.api.errors import ApiError, not_found
from app.core.queue import enqueue_job
from app.jobspec import ConfigError, build_config
from app.models import Job, utcnow
from app.schemas import JobCreate, JobPublic, JobReport, JobsPublic, JobStatus, Message

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger("mmguard.api")

_NOT_FOUND = {404: {"model": Message}}


@router.post(
    "", status_code=202, response_model=JobPublic, responses={**_NOT_FOUND, 422: {"model": Message}, 503: {"model": Message}}
)
def create_job(
    body: JobCreate,
    response: Response,
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", description="repeat-safe: the same key and body answer the original job")
    ] = None,
) -> JobPublic:
    """Queue a protection job for one of the caller's datasets."""
    key = idempotency.check_key(idempotency_key)
    request_hash = None
    if key is not None:
        request_hash = idempotency.digest(body.model_dump(mode="json"))
        existing = idempotency.find(session, Job, owner, key)
        if existing is not None:
            return _replayed(existing, request_hash, response, settings)
    dataset = crud.get_dataset(session, owner, body.dataset_id)
    if dataset is None:
        raise not_found("dataset")
    try:
        config, preset_name = build_config(body.preset, body.config, settings)
    except ConfigError as exc:
        raise ApiError(422, str(exc)) from exc
    job = Job(
        owner_id=owner.id,
        dataset_id=dataset.id,
        preset=preset_name,
        config=config.to_dict(),
        progress_total=dataset.sample_count,
        idempotency_key=key,
        request_hash=request_hash,
    )
    session.add(job)
    try:
        session.commit()
    except IntegrityError:  # a concurrent request with the same key won
        session.rollback()
        existing = idempotency.find(session, Job, owner, key) if key else None
        if existing is None or request_hash is None:
            raise
        return _replayed(existing, request_hash, response, settings)
    try:
        enqueue_job(settings, str(job.id))
    except Exception as exc:
        log.error("could not queue job %s: %s", job.id, exc)
        job.status, job.error, job.finished_at = "failed", "the job queue is unreachable; try again later", utcnow()
        job.idempotency_key = None  # a retry with the same key may try again
        session.commit()
        webhooks.job_finished(settings, job.id)  # recorded now, sent by a worker's sweep once the broker is back
        raise ApiError(503, "the job queue is unreachable; try again later") from exc
    public = crud.job_public(job)
    job.enqueued_at = utcnow()  # a row left without it is sent by the workers' sweep (app/recovery.py)
    try:
        session.commit()
    except SQLAlchemyError as exc:  # the job is queued all the same; the sweep's second message is harmless
        session.rollback()
        log.warning("job %s queued, but recording so failed: %s", public.id, exc)
    response.headers["Location"] = f"{settings.api_prefix}/jobs/{public.id}"
    return public


def _replayed(job: Job, request_hash: str, response: Response, settings: SettingsDep) -> JobPublic:
    idempotency.check_same(job, request_hash, "job")
    response.headers["Location"] = f"{settings.api_prefix}/jobs/{job.id}"
    response.headers[idempotency.REPLAYED] = "true"
    return crud.job_public(job)


@router.get("", response_model=JobsPublic)
def list_jobs(
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    status: JobStatus | None = None,
    offset: OffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobsPublic:
    """The caller's jobs, newest first, optionally only those with one status."""
    rows, count = crud.list_jobs(session, owner, offset, min(limit, settings.page_size_max), status)
    return JobsPublic(data=[crud.job_public(j) for j in rows], count=count)


@router.get("/{job_id}", response_model=JobPublic, responses=_NOT_FOUND)
def get_job(job_id: uuid.UUID, owner: OwnerDep, session: SessionDep) -> JobPublic:
    job = crud.get_job(session, owner, job_id)
    if job is None:
        raise not_found("job")
    return crud.job_public(job)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic, responses={**_NOT_FOUND, 409: {"model": Message}})
def cancel_job(job_id: uuid.UUID, owner: OwnerDep, session: SessionDep, settings: SettingsDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops at the engine's next step (409 once it has
    succeeded or failed)."""
    if crud.get_job(session, owner, job_id) is None:
        raise not_found("job")
    now = utcnow()
    queued = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.owner_id == owner.id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now, updated_at=now, progress_stage="cancelled")
    ).rowcount
    if not queued:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.owner_id == owner.id, Job.status == "running")
            .values(cancel_requested=True, updated_at=now)
        )
    session.commit()
    if queued:
        webhooks.job_finished(settings, job_id)
    job = crud.get_job(session, owner, job_id)
    assert job is not None
    session.refresh(job)
    if job.status in ("succeeded", "failed"):
        raise ApiError(409, f"the job has already {job.status}")
    return crud.job_public(job)  # cancelled (again: cancelling is idempotent) or running with the flag set


def _finished_job(session: SessionDep, owner: OwnerDep, job_id: uuid.UUID) -> Job:
    job = crud.get_job(session, owner, job_id)
    if job is None:
        raise not_found("job")
    if job.status != "succeeded":
        raise ApiError(409, f"the job is {job.status}; results exist once it has succeeded")
    return job


@router.get(
    "/{job_id}/archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **_NOT_FOUND, 409: {"model": Message}},
)
def download_archive(job_id: uuid.UUID, owner: OwnerDep, session: SessionDep, storage: StorageDep) -> StreamingResponse:
    """The protected dataset as a .zip (same layout and file names, images as PNG)."""
    job = _finished_job(session, owner, job_id)
    assert job.archive_key is not None
    size = storage.size(job.archive_key)
    return StreamingResponse(
        storage.iter_chunks(job.archive_key),
        media_type="application/zip",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="protected-{job.id}.zip"',
        },
    )


@router.get("/{job_id}/report", response_model=JobReport, responses={**_NOT_FOUND, 409: {"model": Message}})
def get_report(job_id: uuid.UUID, owner: OwnerDep, session: SessionDep, storage: StorageDep) -> JobReport:
    """The engine's report (per-image L-inf, PSNR, SSIM, config, timings, ...) with the job's metadata."""
    job = _finished_job(session, owner, job_id)
    assert job.report_key is not None
    with storage.open(job.report_key) as handle:
        report = json.load(handle)
    return JobReport(job=crud.job_public(job), report=report)
