"""The FastAPI application: `create_app(settings)`; `app` for `uvicorn app.main:app`."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from app.api import errors
from app.api.main import api_router
from app.core.config import Settings, get_settings
from app.core.db import session_factory
from app.core.storage import make_storage
from app.ui import UI_PATH, UiFiles


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    logging.basicConfig(level=settings.log_level)
    application = FastAPI(
        title="mmguard",
        summary="Protect image-text datasets against unauthorized fine-tuning of vision-language models.",
        version="0.1.0",
        openapi_url=f"{settings.api_prefix}/openapi.json",
        docs_url=f"{settings.api_prefix}/docs",
        redoc_url=None,
        generate_unique_id_function=_operation_id,
    )
    application.state.settings = settings
    application.state.session_factory = session_factory(settings.sqlalchemy_url)
    application.state.storage = make_storage(settings.storage_root)
    errors.install(application)
    application.include_router(api_router, prefix=settings.api_prefix)
    # the browser UI: static files calling the REST API above (app/ui/)
    application.mount(UI_PATH, UiFiles(), name="ui")
    application.add_api_route("/", lambda: RedirectResponse(f"{UI_PATH}/"), include_in_schema=False)
    return application


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app from the environment on first access
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
