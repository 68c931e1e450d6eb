"""The embedded default: the local owner's first key, and the worker child process of `mmguard serve`."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from app import crud
from app.core.config import Settings
from app.core.db import session_scope


def first_start_key(settings: Settings) -> str | None:
    """On an embedded database with no owner yet, create owner 'local' and return its key (saved to
    a 0600 file in the data dir so it can be found again); otherwise None."""
    if not settings.embedded_database:
        return None
    with session_scope(settings.sqlalchemy_url) as session:
        if crud.count_owners(session):
            return None
        key = crud.create_api_key(session, crud.get_or_create_owner(session, "local"))
    path = settings.local_key_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def worker_argv(settings: Settings, log_level: str = "INFO", concurrency: int = 1) -> list[str]:
    argv = [
        sys.executable, "-m", "celery", "-A", "worker", "worker",
        f"--loglevel={log_level}", f"--concurrency={concurrency}", "-Q", settings.queue,
        "--pool=prefork",
    ]
    if settings.embedded_broker:
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


def _die_with_parent() -> None:
    try:  # Linux: the worker gets SIGTERM if `mmguard serve` dies without cleaning up
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_worker_child(settings: Settings, log_level: str = "INFO") -> subprocess.Popen[bytes]:
    """The Celery worker in its own process group: a signal meant for `serve` (Ctrl-C in a terminal,
    a group kill) must not reach Celery's pool children behind their parent's back; `serve` stops
    the worker itself, and the kernel sends it SIGTERM should `serve` die without doing so."""
    env = dict(os.environ, MMGUARD_DATA_DIR=str(settings.data_dir.resolve()))
    return subprocess.Popen(  # noqa: PLW1509 - preexec_fn only calls prctl
        worker_argv(settings, log_level), env=env, start_new_session=True, preexec_fn=_die_with_parent
    )


def stop_worker_child(child: subprocess.Popen[bytes]) -> None:
    """Warm stop, then cold, then kill the worker's whole group; a job cut short is re-queued on the
    next start."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGQUIT, 5)):
        if child.poll() is not None:
            return
        child.send_signal(sig)
        try:
            child.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait(5)
