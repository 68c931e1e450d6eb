"""Webhook endpoints (register, list, get, delete) and their delivery log. See app/webhooks.py."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from app.api.deps import OffsetQuery, OwnerDep, SessionDep, SettingsDep
from app.api.errors import ApiError, not_found
from app.models import WebhookDelivery, WebhookEndpoint
from app.schemas import Message
from app.webhooks import TargetRefused, check_target, new_secret

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
_NOT_FOUND = {404: {"model": Message}}


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http(s) URL that receives job.succeeded|failed|cancelled")
    description: str = Field(default="", max_length=255)


class WebhookPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    description: str
    active: bool
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="whsec_<base64>: verify webhook-signature with it; shown only once")


class WebhooksPublic(BaseModel):
    data: list[WebhookPublic]
    count: int


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    msg_id: str
    event_type: str
    job_id: uuid.UUID | None
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class DeliveriesPublic(BaseModel):
    data: list[DeliveryPublic]
    count: int


def _endpoint(session: SessionDep, owner: OwnerDep, webhook_id: uuid.UUID) -> WebhookEndpoint:
    row = session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.id == webhook_id, WebhookEndpoint.owner_id == owner.id)
    )
    if row is None:
        raise not_found("webhook")
    return row


@router.post("", status_code=201, response_model=WebhookCreated, responses={422: {"model": Message}})
async def create_webhook(
    body: WebhookCreate, response: Response, owner: OwnerDep, session: SessionDep, settings: SettingsDep
) -> WebhookCreated:
    """Register a URL for job-end events. Private, loopback and link-local targets are refused unless
    MMGUARD_WEBHOOK_ALLOW names them."""
    try:
        await run_in_threadpool(check_target, body.url, settings)
    except TargetRefused as exc:
        raise ApiError(422, f"webhook URL refused: {exc}") from exc
    row = WebhookEndpoint(owner_id=owner.id, url=body.url, description=body.description, secret=new_secret())

    def insert() -> None:
        session.add(row)
        session.commit()

    await run_in_threadpool(insert)
    response.headers["Location"] = f"{settings.api_prefix}/webhooks/{row.id}"
    return WebhookCreated(**WebhookPublic.model_validate(row).model_dump(), secret=row.secret)


@router.get("", response_model=WebhooksPublic)
def list_webhooks(owner: OwnerDep, session: SessionDep) -> WebhooksPublic:
    rows = session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner.id).order_by(WebhookEndpoint.created_at)
    ).all()
    return WebhooksPublic(data=[WebhookPublic.model_validate(r) for r in rows], count=len(rows))


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=_NOT_FOUND)
def get_webhook(webhook_id: uuid.UUID, owner: OwnerDep, session: SessionDep) -> WebhookEndpoint:
    return _endpoint(session, owner, webhook_id)


@router.delete("/{webhook_id}", status_code=204, responses=_NOT_FOUND)
def delete_webhook(webhook_id: uuid.UUID, owner: OwnerDep, session: SessionDep) -> Response:
    """Remove the endpoint and its delivery log; pending retries are dropped."""
    session.delete(_endpoint(session, owner, webhook_id))
    session.commit()
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveriesPublic, responses=_NOT_FOUND)
def list_deliveries(
    webhook_id: uuid.UUID,
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    offset: OffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> DeliveriesPublic:
    """The delivery log, newest first: each event's attempts, last HTTP status and error."""
    endpoint = _endpoint(session, owner, webhook_id)
    where = WebhookDelivery.endpoint_id == endpoint.id
    count = session.scalar(select(func.count()).select_from(WebhookDelivery).where(where)) or 0
    rows = session.scalars(
        select(WebhookDelivery).where(where).order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .offset(offset).limit(min(limit, settings.page_size_max))
    ).all()
    return DeliveriesPublic(data=[DeliveryPublic.model_validate(r) for r in rows], count=count)
