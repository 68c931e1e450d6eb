"""Datasets: streamed upload (validated before it is accepted), list, get, delete."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError

from app import crud, idempotency
from app.api.deps import OffsetQuery, OwnerDep, SessionDep, SettingsDep, StorageDep
from app.api.errors import ApiError, not_found
from app.core.config import Settings
from app.core.storage import Storage
from app.ingest import (
    DatasetRejected,
    DatasetSummary,
    UploadError,
    UploadTooLarge,
    receive_upload,
    validate_archive,
)
from app.models import Dataset
from app.schemas import DatasetProblems, DatasetPublic, DatasetsPublic, Message

router = APIRouter(prefix="/datasets", tags=["datasets"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a .zip or .tar holding images and their annotations (JSONL, CSV, LLaVA, COCO, WebDataset shards or Parquet; docs/formats.md)",
                        }
                    },
                }
            }
        },
    }
}


def _validate(storage: Storage, key: str, settings: Settings) -> DatasetSummary:
    settings.scratch_root.mkdir(parents=True, exist_ok=True)
    with storage.local_path(key) as path:
        return validate_archive(path, settings.scratch_root, settings.max_upload_bytes)


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    responses={413: {"model": Message}, 422: {"model": DatasetProblems}},
    openapi_extra=_UPLOAD_BODY,
)
async def upload_dataset(
    request: Request,
    response: Response,
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="repeat-safe: the same key and file answer the original dataset"),
    ] = None,
) -> Dataset:
    """Upload a dataset archive (multipart field `file`); it is checked before it is accepted."""
    key_header = idempotency.check_key(idempotency_key)
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise ApiError(413, f"the upload is larger than the limit of {limit} bytes")
    dataset_id = uuid.uuid4()
    prefix = f"datasets/{dataset_id}"
    try:
        received = await receive_upload(
            request.headers.get("content-type"), request.stream(), storage, f"{prefix}/upload", limit
        )
    except UploadTooLarge as exc:
        storage.delete_prefix(prefix)
        raise ApiError(413, str(exc)) from exc
    except UploadError as exc:
        storage.delete_prefix(prefix)
        raise ApiError(422, str(exc)) from exc
    except BaseException:  # client gone mid-upload, disk full, ...
        storage.delete_prefix(prefix)
        raise
    if key_header is not None:
        existing = await run_in_threadpool(idempotency.find, session, Dataset, owner, key_header)
        if existing is not None:
            storage.delete_prefix(prefix)
            return _replayed(existing, received.sha256, response, settings)
    key = f"{prefix}/source.{received.archive_format}"
    try:
        storage.move(f"{prefix}/upload", key)
        summary = await run_in_threadpool(_validate, storage, key, settings)
    except DatasetRejected as exc:
        storage.delete_prefix(prefix)
        raise ApiError(422, f"dataset rejected: {exc}", problems=exc.problems) from exc
    except BaseException:
        storage.delete_prefix(prefix)
        raise

    def insert() -> Dataset:
        dataset = Dataset(
            id=dataset_id,
            owner_id=owner.id,
            name=received.filename,
            storage_key=key,
            archive_format=received.archive_format,
            size_bytes=received.size,
            sample_count=summary.sample_count,
            layout=summary.layout,
            kind=summary.kind,
            idempotency_key=key_header,
            request_hash=received.sha256 if key_header is not None else None,
        )
        session.add(dataset)
        try:
            session.commit()
        except IntegrityError:  # a concurrent upload with the same key won
            session.rollback()
            existing = idempotency.find(session, Dataset, owner, key_header) if key_header else None
            if existing is None:
                raise
            return existing
        return dataset

    try:
        dataset = await run_in_threadpool(insert)
    except BaseException:
        storage.delete_prefix(prefix)
        raise
    if dataset.id != dataset_id:
        storage.delete_prefix(prefix)
        return _replayed(dataset, received.sha256, response, settings)
    response.headers["Location"] = f"{settings.api_prefix}/datasets/{dataset.id}"
    return dataset


def _replayed(dataset: Dataset, sha256: str, response: Response, settings: Settings) -> Dataset:
    idempotency.check_same(dataset, sha256, "dataset upload")
    response.headers["Location"] = f"{settings.api_prefix}/datasets/{dataset.id}"
    response.headers[idempotency.REPLAYED] = "true"
    return dataset


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    offset: OffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> DatasetsPublic:
    """The caller's datasets, newest first."""
    rows, count = crud.list_datasets(session, owner, offset, min(limit, settings.page_size_max))
    return DatasetsPublic(data=[DatasetPublic.model_validate(r) for r in rows], count=count)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses={404: {"model": Message}})
def get_dataset(dataset_id: uuid.UUID, owner: OwnerDep, session: SessionDep) -> Dataset:
    dataset = crud.get_dataset(session, owner, dataset_id)
    if dataset is None:
        raise not_found("dataset")
    return dataset


@router.delete(
    "/{dataset_id}", status_code=204, responses={404: {"model": Message}, 409: {"model": Message}}
)
def delete_dataset(dataset_id: uuid.UUID, owner: OwnerDep, session: SessionDep, storage: StorageDep) -> Response:
    """Delete a dataset and its stored archive; jobs made from it keep their results."""
    dataset = crud.get_dataset(session, owner, dataset_id)
    if dataset is None:
        raise not_found("dataset")
    if crud.active_jobs_for_dataset(session, dataset):
        raise ApiError(409, "the dataset has queued or running jobs; cancel them first")
    prefix = dataset.storage_key.rsplit("/", 1)[0]
    session.delete(dataset)
    session.commit()
    storage.delete_prefix(prefix)
    return Response(status_code=204)
