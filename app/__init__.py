"""mmguard web service: REST API over the protection engine (FastAPI + SQLAlchemy + Celery).

The API process never imports torch: only mmguard_core.config and mmguard_core.data are used here.
"""
