from fastapi import APIRouter

from app.api.routes import datasets, jobs, samples, session, utils, webhooks

api_router = APIRouter()
api_router.include_router(utils.router)
api_router.include_router(datasets.router)
api_router.include_router(jobs.router)
api_router.include_router(samples.router)
api_router.include_router(session.router)
api_router.include_router(webhooks.router)
