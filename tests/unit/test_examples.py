"""The example job specs in examples/ are valid against the current schema and registries."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autoft_service.errors import InvalidSpec
from autoft_service.spec import load_spec_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _lay_out(root: Path, params: dict) -> None:
    """Create the files and folders an example names (placeholders), so only the spec itself is tested."""
    weights = root / params["model"]["path"]
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"placeholder")
    for src in [*(v for k, v in params["data"].items() if k != "ood_tests"), *params["data"]["ood_tests"].values()]:
        target = root / src["path"]
        if src["format"] == "imagefolder":
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("path,label\n")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_spec_validates(path: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    with pytest.raises(InvalidSpec) as e:  # nothing laid out yet: the first missing path is named
        load_spec_file(path, data_roots=[tmp_path])
    assert e.value.field.startswith("task.params.")
    _lay_out(tmp_path, raw["task"]["params"])
    spec = load_spec_file(path, data_roots=[tmp_path])
    assert spec.task.name == "image-classification"
    assert spec.resources.gpus_per_trial < 1  # the example packs trials per GPU
