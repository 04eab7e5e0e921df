"""Service settings, read once from ``AUTOFT_*`` environment variables (or a ``.env`` file) and validated.

Embedded defaults put everything under one data directory: a SQLite job store, a SQLite Optuna storage, a
local MLflow store (SQLite backend + artifact folder) and a local Ray runtime. Production points
``AUTOFT_DATABASE_URL`` / ``AUTOFT_OPTUNA_STORAGE_URL`` at PostgreSQL, ``AUTOFT_MLFLOW_TRACKING_URI`` at an
MLflow server and ``AUTOFT_RAY_ADDRESS`` (or ``RAY_ADDRESS``) at a cluster.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where ``mlflow ui`` serves by default: job links point there unless AUTOFT_MLFLOW_UI_URL says otherwise.
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOFT_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "production"
    data_dir: Path = Field(default=Path(".autoft"), description="Root of every embedded store.")
    task_cache_dir: Path | None = Field(
        default=None, description="Pretrained-weight cache; default data_dir/cache."
    )
    database_url: str | None = Field(default=None, description="Job store URL; default SQLite in data_dir.")
    optuna_storage_url: str | None = Field(default=None, description="Optuna RDB URL; default SQLite.")
    mlflow_tracking_uri: str | None = Field(default=None, description="Default: SQLite store in data_dir.")
    mlflow_artifact_location: str | None = Field(default=None, description="Default: data_dir/mlartifacts.")
    mlflow_ui_url: str | None = Field(
        default=None,
        description="Public URL of the MLflow UI, for links in job responses. Default: the tracking server "
        "when AUTOFT_MLFLOW_TRACKING_URI is http(s), else http://127.0.0.1:5000 (where `mlflow ui` serves).",
    )
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("AUTOFT_RAY_ADDRESS", "RAY_ADDRESS")
    )
    data_roots: str = Field(
        default="",
        description="Folders (os.pathsep-separated) that job specs may read weights and datasets from; "
        "default data_dir/datasets.",
    )
    ray_num_cpus: int | None = Field(default=None, ge=1, description="CPUs of a local Ray runtime.")
    max_concurrent_jobs: int = Field(default=1, ge=1, le=1000)
    resident_workers: bool = Field(
        default=True,
        description="Run trials and final-stage runs on long-lived worker processes that keep their imports, "
        "loaded tasks and warmed-up model from job to job (each Tune trial only relays); false: every trial "
        "trains in its own Tune actor process and every final-stage run in a Ray task.",
    )
    resident_idle_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long an idle resident worker keeps its CPUs / GPUs before it ends and gives them "
        "back to the Ray runtime.",
    )
    auth_disabled: bool = Field(default=False, description="Only honoured when environment=development.")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    runner_lease_seconds: float = Field(default=30.0, gt=1)
    runner_heartbeat_seconds: float = Field(default=5.0, gt=0)
    max_trials_per_job: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Ceiling on a job's total trials (spec budget plus extensions and retries).",
    )
    rate_limit_per_second: float = Field(
        default=20.0, ge=0, description="Requests per second each API key may sustain; 0 turns limits off."
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="Requests an idle API key may send at once.")
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long an API process trusts a key it has checked (key → tenant, in memory) before "
        "asking the job store again; a revoked key is refused within this many seconds. 0 turns it off.",
    )
    report_link_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="HMAC key of signed report links; default: random per process (set it when several "
        "API processes serve the same links).",
    )
    report_link_ttl_seconds: int = Field(default=900, ge=10, le=7 * 24 * 3600)
    tracking_grace_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long the end of a search waits for an unreachable MLflow server to take the "
        "deferred tracking writes; what is still pending then is recorded as lost.",
    )

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        if self.auth_disabled and self.environment != "development":
            raise ValueError("AUTOFT_AUTH_DISABLED=true is only allowed with AUTOFT_ENVIRONMENT=development")
        if self.runner_heartbeat_seconds >= self.runner_lease_seconds:
            raise ValueError("runner_heartbeat_seconds must be < runner_lease_seconds")
        if self.mlflow_ui_url is None:
            remote = self.mlflow_tracking_uri or ""
            self.mlflow_ui_url = remote if remote.startswith(("http://", "https://")) else DEFAULT_MLFLOW_UI
        return self

    @property
    def mlflow_ui_command(self) -> str | None:
        """How to start the MLflow UI over the embedded store (None when tracking goes to a server)."""
        if (self.mlflow_tracking_uri or "").startswith(("http://", "https://")):
            return None
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"

    # Resolved locations -------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        return self.task_cache_dir.expanduser().resolve() if self.task_cache_dir else self.root / "cache"

    @property
    def data_root_paths(self) -> list[Path]:
        """``data_roots`` split and resolved; default ``data_dir/datasets``."""
        parts = [p for p in self.data_roots.split(os.pathsep) if p.strip()]
        return [Path(p).expanduser().resolve() for p in parts] or [self.root / "datasets"]

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def job_store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'autoft.db'}"

    @property
    def optuna_url(self) -> str:
        return self.optuna_storage_url or f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str:
        return self.mlflow_artifact_location or (self.root / "mlartifacts").as_uri()

    def ensure_dirs(self) -> None:
        for d in (self.root, self.cache_dir, self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (a FastAPI dependency; tests override it)."""
    return Settings()
