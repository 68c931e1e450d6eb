"""Health and presets: no key needed."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import SessionDep, SettingsDep, StorageDep
from app.core.queue import ping_broker
from app.jobspec import presets
from app.schemas import HealthPublic, PresetPublic

router = APIRouter(tags=["utils"])
log = logging.getLogger("mmguard.api")


def _probe(check) -> str:  # noqa: ANN001
    try:
        check()
    except Exception as exc:
        log.warning("health check failed: %s", exc)
        return f"error: {type(exc).__name__}"
    return "ok"


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
def health(session: SessionDep, settings: SettingsDep, storage: StorageDep) -> JSONResponse:
    """Whether the database, the broker and the storage answer."""
    result = {
        "database": _probe(lambda: session.execute(text("SELECT 1"))),
        "broker": _probe(lambda: ping_broker(settings)),
        "storage": _probe(storage.check),
    }
    healthy = all(v == "ok" for v in result.values())
    body = HealthPublic(status="ok" if healthy else "degraded", **result)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


@router.get("/presets", response_model=list[PresetPublic])
def list_presets() -> list[PresetPublic]:
    """The intensity presets and the full configuration each stands for."""
    return [PresetPublic(name=name, config=config) for name, config in presets().items()]
