"""Request and response bodies, one family per entity (template style: XCreate / XPublic / XsPublic)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Message(BaseModel):
    detail: str


class Problem(BaseModel):
    file: str | None = None
    line: int | None = None
    message: str


class DatasetProblems(BaseModel):
    detail: str
    problems: list[Problem]


# -- datasets ------------------------------------------------------------------------------
class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    archive_format: str
    size_bytes: int
    sample_count: int
    layout: str
    kind: str
    created_at: datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


# -- jobs ----------------------------------------------------------------------------------
class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: uuid.UUID
    preset: str | None = Field(default=None, description="fast | balanced | strong (default balanced)")
    config: dict[str, Any] | None = Field(
        default=None, description="ProtectionConfig fields; with a preset they override it"
    )


class Progress(BaseModel):
    done: int
    total: int
    stage: str


class JobPublic(BaseModel):
    id: uuid.UUID
    dataset_id: uuid.UUID | None
    status: JobStatus
    preset: str | None
    config: dict[str, Any]
    progress: Progress
    error: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class JobReport(BaseModel):
    job: JobPublic
    report: dict[str, Any]


# -- misc ----------------------------------------------------------------------------------
class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str
    storage: str


class PresetPublic(BaseModel):
    name: str
    config: dict[str, Any]
