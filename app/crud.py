"""Database operations shared by the API and the CLI. Every query on owned rows filters by owner."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core import security
from app.models import ApiKey, Dataset, Job, Owner, utcnow
from app.schemas import JobPublic, Progress


# -- owners and keys -------------------------------------------------------------------------
def get_or_create_owner(session: Session, name: str) -> Owner:
    owner = session.scalar(select(Owner).where(Owner.name == name))
    if owner is None:
        owner = Owner(name=name)
        session.add(owner)
        session.flush()
    return owner


def create_api_key(session: Session, owner: Owner) -> str:
    """Create a key for `owner` and return it; only its prefix and digest are kept."""
    key, prefix, digest = security.generate_key()
    session.add(ApiKey(owner_id=owner.id, prefix=prefix, digest=digest))
    session.flush()
    return key


def authenticate(session: Session, key: str) -> Owner | None:
    prefix = security.key_prefix(key)
    if prefix is None:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or row.revoked_at is not None or not security.key_matches(key, row.digest):
        return None
    return session.get(Owner, row.owner_id)


def revoke_api_key(session: Session, prefix: str) -> bool:
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def count_owners(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Owner)) or 0


# -- datasets --------------------------------------------------------------------------------
def get_dataset(session: Session, owner: Owner, dataset_id: uuid.UUID) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.owner_id == owner.id))


def list_datasets(session: Session, owner: Owner, offset: int, limit: int) -> tuple[list[Dataset], int]:
    where = Dataset.owner_id == owner.id
    count = session.scalar(select(func.count()).select_from(Dataset).where(where)) or 0
    rows = session.scalars(
        select(Dataset).where(where).order_by(Dataset.created_at.desc(), Dataset.id).offset(offset).limit(limit)
    ).all()
    return list(rows), count


def active_jobs_for_dataset(session: Session, dataset: Dataset) -> int:
    return session.scalar(
        select(func.count()).select_from(Job).where(
            Job.dataset_id == dataset.id, Job.status.in_(("queued", "running"))
        )
    ) or 0


# -- jobs ------------------------------------------------------------------------------------
def get_job(session: Session, owner: Owner, job_id: uuid.UUID) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == owner.id))


def list_jobs(
    session: Session, owner: Owner, offset: int, limit: int, status: str | None
) -> tuple[list[Job], int]:
    conditions: list[Any] = [Job.owner_id == owner.id]
    if status is not None:
        conditions.append(Job.status == status)
    count = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
    rows = session.scalars(
        select(Job).where(*conditions).order_by(Job.created_at.desc(), Job.id).offset(offset).limit(limit)
    ).all()
    return list(rows), count


def job_public(job: Job) -> JobPublic:
    return JobPublic(
        id=job.id,
        dataset_id=job.dataset_id,
        status=job.status,  # type: ignore[arg-type]
        preset=job.preset,
        config=job.config,
        progress=Progress(done=job.progress_done, total=job.progress_total, stage=job.progress_stage),
        error=job.error,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
