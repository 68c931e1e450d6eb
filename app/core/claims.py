"""Whether a job's worker claim is still live: shared by the workers and the start-up recovery."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from app.core.config import Settings
from app.models import Job, utcnow


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_live(job: Job, settings: Settings, me: str | None = None) -> bool:
    """A claim is dead when its heartbeat is older than stale_after_seconds, or at once when its
    process is gone from this host (or is `me`, which is not running it)."""
    if job.worker_id is None or job.worker_id == me:
        return False
    host, _, pid = job.worker_id.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        return False
    if job.heartbeat_at is None:
        return False
    return utcnow() - job.heartbeat_at < timedelta(seconds=settings.stale_after_seconds)
