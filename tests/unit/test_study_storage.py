"""The study's default SQLite storage: WAL mode and no fsync per commit, and still picklable (Tune saves it)."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import optuna

from autoft_service.engine.engine import optuna_storage


def test_a_sqlite_study_file_is_opened_in_wal_mode_and_the_storage_pickles(tmp_path: Path) -> None:
    storage = optuna_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(storage=storage, study_name="s")
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    with sqlite3.connect(tmp_path / "optuna.db") as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = pickle.loads(pickle.dumps(storage))
    assert optuna.load_study(study_name="s", storage=again).trials[0].value == 0.5


def test_other_urls_keep_optunas_engine(tmp_path: Path) -> None:
    storage = optuna_storage("sqlite:///:memory:")
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL, the default
