"""The CLI explains its options and reports bad specs with the field at fault."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml
from typer.main import get_command
from typer.testing import CliRunner

import autoft_service.cli
from autoft_service.cli import app
from tests.conftest import small_spec

runner = CliRunner()


def test_help_lists_commands_and_options() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("run", "demo", "validate"):
        assert cmd in res.output
    res = runner.invoke(app, ["run", "--help"])
    assert res.exit_code == 0
    for opt in ("--data-dir", "--ray-address", "--resume"):
        assert opt in res.output


def test_validate_ok_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(small_spec()))
    res = runner.invoke(app, ["validate", str(good)])
    assert res.exit_code == 0 and "valid" in res.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(small_spec(search={"loss_terms": ["ce", "focal"]})))
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2
    assert "search.loss_terms.1" in res.output and "focal" in res.output


def test_run_rejects_bad_spec_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(small_spec(budget={"trials": 2, "inner_steps": 10, "eval_every": 20})))
    res = runner.invoke(app, ["run", str(bad), "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 2
    assert "eval_every" in res.output
    assert not (tmp_path / "d").exists()


def test_resume_of_unknown_job_is_an_error(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(small_spec()))
    res = runner.invoke(app, ["run", str(good), "--data-dir", str(tmp_path / "d"), "--resume", "nope"])
    assert res.exit_code == 2 and "--resume" in res.output


def test_validate_checks_paths_against_the_data_dirs_roots(tmp_path: Path) -> None:
    from workers.images.tiny_models import save_tiny_timm

    root = tmp_path / "d" / "datasets"  # the default data root of --data-dir d
    save_tiny_timm(root / "m")
    (root / "train").mkdir()
    here = {"format": "imagefolder", "path": "train"}
    params = {
        "model": {"family": "timm", "path": "m"},
        "data": {"id_train": here, "id_test": here, "ood_val": here},
    }
    spec = tmp_path / "img.yaml"
    spec.write_text(yaml.safe_dump(small_spec(task={"name": "image-classification", "params": params})))
    res = runner.invoke(app, ["validate", str(spec), "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0 and "valid" in res.output, res.output
    res = runner.invoke(app, ["validate", str(spec), "--data-dir", str(tmp_path / "elsewhere")])
    assert res.exit_code == 2 and "task.params.model.path" in res.output


def test_every_command_is_assembled_in_the_app() -> None:
    group = get_command(app)
    commands = list(group.commands)  # type: ignore[attr-defined]
    assert commands == [
        "run", "demo", "validate", "serve", "runner",
        "submit", "status", "watch", "cancel", "extend", "retry", "report", "cache", "keys",
    ]  # fmt: skip
    assert sorted(group.commands["cache"].commands) == ["info", "prune"]  # type: ignore[attr-defined]
    assert sorted(group.commands["keys"].commands) == ["create", "list", "revoke"]  # type: ignore[attr-defined]


def test_command_modules_share_only_common_so_there_is_no_import_circle() -> None:
    """Each command module may import ``cli.common`` and nothing else of the CLI; only ``app`` assembles."""
    package = Path(autoft_service.cli.__file__).parent
    for path in sorted(package.glob("*.py")):
        if path.stem in ("__init__", "__main__", "app"):
            continue
        imported = {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module
        } | {
            alias.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        mine = {m for m in imported if m == "autoft_service.cli" or m.startswith("autoft_service.cli.")}
        assert mine <= {"autoft_service.cli.common"}, f"{path.name} imports {sorted(mine)}"


def test_python_dash_m_runs_the_cli() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "autoft_service.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "submit" in res.stdout and "cache" in res.stdout and "autoft" in res.stdout
