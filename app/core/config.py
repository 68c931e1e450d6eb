"""All service settings in one pydantic-settings class (environment variables MMGUARD_*).

With nothing set, the service runs "embedded": a SQLite file, a local storage folder and a
filesystem message queue, all under MMGUARD_DATA_DIR (default ./.mmguard). Deployments point
MMGUARD_DATABASE_URL at Postgres, MMGUARD_BROKER_URL at Redis and MMGUARD_STORAGE_DIR at a volume.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER = "mmguard-fs://"  # app.core.fsqueue: the filesystem queue, messages written whole


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MMGUARD_", env_file=None, extra="ignore")

    # where embedded state lives (SQLite file, storage, queue folders, the local owner's key)
    data_dir: Path = Path(".mmguard")
    database_url: str | None = None  # e.g. postgresql+psycopg2://user@host:5432/mmguard
    broker_url: str | None = None  # e.g. redis://host:6379/0; unset = filesystem queue in data_dir
    storage_dir: Path | None = None  # unset = data_dir/storage
    work_dir: Path | None = None  # worker scratch space; unset = data_dir/work

    queue: str = "mmguard"  # Celery queue the API sends jobs to and workers consume
    api_prefix: str = "/api/v1"
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)  # 413 past this
    page_size_max: int = 200

    # long GPU jobs: a message stays invisible this long before Redis redelivers it (must exceed
    # the longest job); the worker heartbeat tells live claims from dead ones.
    visibility_timeout: int = 7 * 24 * 3600
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    stale_after_seconds: float = Field(default=60.0, gt=0)
    # a job whose workers died under it this many times (out of memory on one shard, say) fails with
    # a message instead of taking down one worker after another (each deploy or restart of a worker
    # that was running it costs one too)
    max_job_attempts: int = Field(default=5, ge=1)
    progress_interval_seconds: float = Field(default=0.5, ge=0)  # floor 0.05
    threads: int | None = Field(default=None, ge=1)  # overrides config.threads in the worker
    # where a worker computes: the machine decides, not the job (auto = the GPU when there is one)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    preload_engine: bool = True  # import the engine (torch) in each worker child at start
    models_dir: Path | None = None  # surrogate checkpoints users may name; unset = zoo only
    log_level: str = "INFO"

    # pipeline integration (app/webhooks.py): targets in private/loopback/link-local ranges are refused
    # unless named here (host names, IP addresses or CIDR networks; JSON list in the environment)
    webhook_allow: list[str] = Field(default_factory=list)
    webhook_retry_delays: list[float] = Field(default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0])
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_queue: str | None = None  # Celery queue for deliveries; unset = the jobs queue
    public_url: str | None = None  # e.g. https://mmguard.example.org: makes the links in events absolute

    # -- resolved values ------------------------------------------------------------------
    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None or self.broker_url.startswith(("filesystem:", "mmguard-fs:"))

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://"):]
            return url
        return f"sqlite:///{(self.data_dir / 'mmguard.db').resolve()}"

    @property
    def celery_broker_url(self) -> str:
        return EMBEDDED_BROKER if self.embedded_broker else str(self.broker_url)

    @property
    def queue_dir(self) -> Path:
        return (self.data_dir / "queue").resolve()

    @property
    def storage_root(self) -> Path:
        return (self.storage_dir or self.data_dir / "storage").resolve()

    @property
    def scratch_root(self) -> Path:
        return (self.work_dir or self.data_dir / "work").resolve()

    @property
    def local_key_file(self) -> Path:
        return self.data_dir.resolve() / "local-api-key"

    def broker_transport_options(self) -> dict[str, Any]:
        if self.embedded_broker:
            folder = self.queue_dir
            return {
                "data_folder_in": str(folder / "messages"),
                "data_folder_out": str(folder / "messages"),
                "control_folder": str(folder / "control"),
                "processed_folder": str(folder / "processed"),
                "store_processed": False,
                "polling_interval": 0.1,
            }
        return {"visibility_timeout": self.visibility_timeout}

    def ensure_dirs(self) -> None:
        """Create the local folders this configuration writes to."""
        self.storage_root.mkdir(parents=True, exist_ok=True)
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        if self.embedded_database:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.embedded_broker:
            for name in ("messages", "control", "processed"):
                (self.queue_dir / name).mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
