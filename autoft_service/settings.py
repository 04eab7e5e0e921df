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

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    mlflow_ui_url: str | None = Field(default=None, description="Public URL of the MLflow UI, for links.")
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
    auth_disabled: bool = Field(default=False, description="Only honoured when environment=development.")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    runner_lease_seconds: float = Field(default=30.0, gt=1)
    runner_heartbeat_seconds: float = Field(default=5.0, gt=0)
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
        return self

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
