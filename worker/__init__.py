"""Celery workers for mmguard: `celery -A worker worker --loglevel=INFO`.

The worker parent process never imports torch; the engine loads only inside pool children
(at child start when MMGUARD_PRELOAD_ENGINE is on, else on the first job).
"""

from worker.celery_app import app

__all__ = ["app"]
