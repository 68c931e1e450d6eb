"""Running one job: claim the row, run the engine with progress and cancel wired to the row, record.

The job row is the source of truth. A claim is `status='running'` plus `worker_id` ("host:pid")
and a heartbeat the claiming process refreshes; a delivery that finds the job finished, or
claimed by a live worker, does nothing. A claim is dead when its heartbeat is older than
MMGUARD_STALE_AFTER_SECONDS, or at once when its process is gone from this same host.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import update

from app.core.claims import claim_is_live, worker_identity
from app.core.config import Settings
from app.core.db import session_scope
from app.core.storage import make_storage
from app.jobspec import config_for_run
from app.models import FINAL_STATUSES, Dataset, Job, utcnow

log = logging.getLogger("mmguard.worker")

MAX_ERROR_CHARS = 2000


class Outcome(enum.Enum):
    MISSING = "missing"  # no such job (deleted)
    DONE = "already finished"
    BUSY = "claimed by a live worker"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "claim lost to another worker"


class LostClaim(Exception):
    pass


def claim(job_id: uuid.UUID, settings: Settings, me: str) -> Outcome | None:
    """Take the job for `me`; None when claimed, else why not (optimistic: attempts is the version)."""
    with session_scope(settings.sqlalchemy_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            return Outcome.MISSING
        if job.status in FINAL_STATUSES:
            return Outcome.DONE
        if job.status == "running" and claim_is_live(job, settings, me):
            return Outcome.BUSY
        now = utcnow()
        guard = (Job.id == job_id, Job.status == job.status, Job.attempts == job.attempts)
        if job.cancel_requested:  # cancelled while its previous worker was gone
            session.execute(
                update(Job).where(*guard).values(status="cancelled", finished_at=now, updated_at=now,
                                                 progress_stage="cancelled", worker_id=None)
            )
            return Outcome.CANCELLED  # finished here: execute() sends its job.cancelled event
        if job.attempts >= settings.max_job_attempts:  # every worker that took it died (or was stopped)
            message = (f"the worker running this job stopped {job.attempts} times before it finished (out of "
                       "memory on a large dataset or image?); start it again on a worker with more memory, or with "
                       "a smaller batch_size")
            session.execute(
                update(Job).where(*guard).values(status="failed", error=message, finished_at=now, updated_at=now,
                                                 progress_stage="failed", worker_id=None)
            )
            return Outcome.FAILED  # finished here: execute() sends its job.failed event
        claimed = session.execute(
            update(Job)
            .where(*guard)
            .values(
                status="running",
                worker_id=me,
                heartbeat_at=now,
                updated_at=now,
                started_at=job.started_at or now,
                attempts=job.attempts + 1,
                progress_stage="starting",
                error=None,
            )
        ).rowcount
        return None if claimed == 1 else Outcome.BUSY


class JobRun:
    """One claimed job in this process; the engine runs in the calling thread."""

    def __init__(self, job_id: uuid.UUID, settings: Settings, me: str) -> None:
        self.job_id = job_id
        self.settings = settings
        self.me = me
        self.url = settings.sqlalchemy_url
        self.storage = make_storage(settings.storage_root)
        self.stop = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._progress: tuple[int, int, str] | None = None
        self._reporter: threading.Thread | None = None

    # -- row updates guarded by our claim ------------------------------------------------------
    def _update(self, **values: Any) -> bool:
        with session_scope(self.url) as session:
            count = session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.worker_id == self.me, Job.status == "running")
                .values(updated_at=utcnow(), **values)
            ).rowcount
        if count != 1:
            self.lost.set()
            self.stop.set()
            return False
        return True

    def _reporter_loop(self) -> None:
        """Background thread: writes the latest progress (at most every progress_interval_seconds) and
        the heartbeat (every heartbeat_seconds), and reads the cancel flag back each time; the engine
        thread never waits on the database."""
        settings = self.settings
        period = min(max(settings.progress_interval_seconds, 0.05), settings.heartbeat_seconds)
        written: tuple[int, int, str] | None = None
        last_beat = time.monotonic()
        while not self._done.wait(period):
            current, now = self._progress, time.monotonic()
            if current == written and now - last_beat < settings.heartbeat_seconds:
                continue
            values: dict[str, Any] = {"heartbeat_at": utcnow()}
            if current is not None and current != written:
                values.update(progress_done=current[0], progress_total=current[1], progress_stage=current[2],
                              updated_at=utcnow())
            try:
                with session_scope(self.url) as session:
                    row = session.execute(
                        update(Job)
                        .where(Job.id == self.job_id, Job.worker_id == self.me, Job.status == "running")
                        .values(**values)
                        .returning(Job.cancel_requested)
                    ).first()
            except Exception as exc:  # keep trying; a long outage makes the claim stale, as it should
                log.warning("job %s: progress/heartbeat write failed: %s", self.job_id, exc)
                continue
            written, last_beat = current, now
            if row is None:
                log.warning("job %s: claim lost; stopping", self.job_id)
                self.lost.set()
                self.stop.set()
            elif row[0]:
                self.stop.set()

    def progress(self, done: int, total: int, stage: str) -> None:
        self._progress = (int(done), int(total), str(stage)[:64])  # picked up by the reporter thread

    def should_stop(self) -> bool:
        return self.stop.is_set()

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Outcome:
        self._reporter = threading.Thread(target=self._reporter_loop, name=f"reporter-{self.job_id}", daemon=True)
        self._reporter.start()
        self.settings.scratch_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"job-{self.job_id}-", dir=self.settings.scratch_root))
        try:
            return self._run(work)
        finally:
            self._stop_reporter()
            shutil.rmtree(work, ignore_errors=True)

    def _stop_reporter(self) -> None:
        """Before the final write: no progress write may land after it."""
        self._done.set()
        if self._reporter is not None and self._reporter is not threading.current_thread():
            self._reporter.join(timeout=30)

    def _run(self, work: Path) -> Outcome:
        t_start = time.perf_counter()
        from mmguard_core.config import ConfigError
        from mmguard_core.data import DatasetError

        with session_scope(self.url) as session:
            job = session.get(Job, self.job_id)
            assert job is not None
            config_data = dict(job.config)
            dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
            source_key = dataset.storage_key if dataset else None
        if source_key is None:
            return self._finish_failed("the dataset was deleted before the job ran")
        try:
            config = config_for_run(config_data, self.settings.threads, self.settings.device)
        except ConfigError as exc:
            return self._finish_failed(f"invalid configuration: {exc}")
        try:
            from mmguard_core.pipeline import ProtectionCancelled, run_protection
        except Exception as exc:
            log.exception("job %s: the engine cannot be loaded", self.job_id)
            return self._finish_failed(f"the protection engine cannot be loaded: {type(exc).__name__}: {exc}")
        _limit_threads(config.threads)

        output = work / "protected.zip"
        (work / "engine").mkdir()
        self._private_paths = [str(work), str(self.settings.storage_root)]
        try:
            with self.storage.local_path(source_key) as source:
                t_engine = time.perf_counter()
                report = run_protection(
                    source, output, config, progress=self.progress, should_stop=self.should_stop,
                    work_dir=work / "engine",
                )
        except ProtectionCancelled:
            self._stop_reporter()
            if self.lost.is_set():
                return Outcome.LOST
            self._update(status="cancelled", finished_at=utcnow(), progress_stage="cancelled", worker_id=None)
            return Outcome.CANCELLED
        except (DatasetError, ConfigError) as exc:
            return self._finish_failed(f"invalid input: {exc}")
        except Exception as exc:
            if self.lost.is_set():
                return Outcome.LOST
            log.exception("job %s: engine failed", self.job_id)
            return self._finish_failed(f"protection failed: {type(exc).__name__}: {exc}")
        if self.lost.is_set():
            return Outcome.LOST

        archive_key = f"jobs/{self.job_id}/protected.zip"
        report_key = f"jobs/{self.job_id}/report.json"
        t_store = time.perf_counter()
        try:
            archive_size = self.storage.put_file(archive_key, output, move=True)
            with self.storage.writer(report_key) as handle:
                handle.write(json.dumps(public_report(report), default=str, allow_nan=False).encode("utf-8"))
        except Exception as exc:  # storage full, gone read-only or unreachable: the job must still end
            log.exception("job %s: storing the result failed", self.job_id)
            try:
                self.storage.delete_prefix(f"jobs/{self.job_id}/")
            except Exception:  # best effort: the row never points at these keys
                log.warning("job %s: could not remove a partly stored result", self.job_id)
            return self._finish_failed(f"the protected data could not be stored: {type(exc).__name__}: {exc}")
        self._stop_reporter()
        with session_scope(self.url) as session:
            job = session.get(Job, self.job_id)
            row_total = job.progress_total if job else 0
        total = self._progress[1] if self._progress else row_total
        ok = self._update(
            status="succeeded",
            finished_at=utcnow(),
            archive_key=archive_key,
            archive_size=archive_size,
            report_key=report_key,
            progress_stage="done",
            progress_done=total,
            progress_total=total,
            worker_id=None,
        )
        t_end = time.perf_counter()
        log.info("job %s: prepare %.2fs, engine %.2fs, store and record %.2fs", self.job_id,
                 t_engine - t_start, t_store - t_engine, t_end - t_store)
        return Outcome.SUCCEEDED if ok else Outcome.LOST

    def _finish_failed(self, message: str) -> Outcome:
        self._stop_reporter()
        for private in getattr(self, "_private_paths", []):  # no server paths in messages owners read
            message = message.replace(private, "<server>")
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 3] + "..."
        ok = self._update(status="failed", error=message, finished_at=utcnow(), progress_stage="failed", worker_id=None)
        return Outcome.FAILED if ok else Outcome.LOST


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # e.g. the PSNR of an unchanged image; JSON has no Infinity
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    """The engine's report as owners see it: strict JSON, without this server's scratch paths."""
    return _json_safe({k: v for k, v in report.items() if k not in ("input", "output")})


def _limit_threads(threads: int) -> None:
    import torch  # the engine has already loaded it; this only caps intra-op threads

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def execute(job_id: str, settings: Settings) -> Outcome:
    """Claim and run `job_id`; a no-op when it is finished, missing or claimed by a live worker."""
    try:
        job_uuid = uuid.UUID(str(job_id))
    except ValueError:
        log.error("ignoring a message for malformed job id %r", job_id)
        return Outcome.MISSING
    me = worker_identity()
    outcome = claim(job_uuid, settings, me) or JobRun(job_uuid, settings, me).run()
    if outcome in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED):
        from app.webhooks import job_finished

        job_finished(settings, job_uuid)  # never raises
    return outcome
