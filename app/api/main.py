from fastapi import APIRouter

from app.api.routes import datasets, jobs, utils

api_router = APIRouter()
api_router.include_router(utils.router)
api_router.include_router(datasets.router)
api_router.include_router(jobs.router)
