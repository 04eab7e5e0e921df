"""The ``image-classification`` task end to end, once per model family, fully offline.

Small randomly initialised timm / open_clip / Hugging Face models are saved into a data root, next to
generated ImageFolder trees and CSV / parquet manifests; a real job then runs through Ray Tune, Optuna and
MLflow (SQLite stores) for each family and the final model is registered.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from autoft_service.engine import Engine, JobHandles, JobListener, TrialEvent
from autoft_service.errors import InvalidSpec
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from tests.conftest import LEAN_FINAL
from workers.images.synthetic_data import make_image_folder, make_manifest
from workers.images.tiny_models import save_tiny_hf, save_tiny_open_clip, save_tiny_timm

pytestmark = pytest.mark.integration

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data root with one tiny model per family and every split; ``AUTOFT_DATA_ROOTS`` points at it, so
    the service settings of every test name it (the engine passes the roots on to the workers)."""
    root = tmp_path_factory.mktemp("data-root")
    save_tiny_timm(root / "models" / "timm-vit")
    save_tiny_open_clip(root / "models" / "clip")
    save_tiny_hf(root / "models" / "hf-vit")
    make_image_folder(root / "shapes" / "train", CLASSES, 24, seed=1)
    make_image_folder(root / "shapes" / "test", CLASSES, 8, seed=2)
    make_manifest(root / "shapes" / "ood_val.csv", root / "shapes" / "ood_val", CLASSES, 12,
                  fmt="csv", shift="noise", seed=3)  # fmt: skip
    make_image_folder(root / "shapes" / "contrast", CLASSES, 8, shift="contrast", seed=4)
    make_manifest(root / "shapes" / "color.parquet", root / "shapes" / "color", CLASSES, 8,
                  fmt="parquet", shift="color", groups=True, seed=5)  # fmt: skip
    old = os.environ.get("AUTOFT_DATA_ROOTS")
    os.environ["AUTOFT_DATA_ROOTS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("AUTOFT_DATA_ROOTS", None)
    else:
        os.environ["AUTOFT_DATA_ROOTS"] = old


@pytest.fixture(scope="module")
def ray_runtime(data_root: Path) -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    yield
    ray.shutdown()


class Recorder(JobListener):
    def __init__(self) -> None:
        self.finished: list[TrialEvent] = []

    def handles(self, handles: JobHandles) -> None:
        pass

    def stage(self, name: str, detail: dict) -> None:
        pass

    def trial_finished(self, ev: TrialEvent) -> None:
        self.finished.append(ev)

    def should_cancel(self) -> bool:
        return False


def image_spec(model: dict[str, Any], baselines: list[str], **params: Any) -> dict[str, Any]:
    return {
        "name": f"images-{model['family']}",
        "task": {
            "name": "image-classification",
            "params": {
                "model": model,
                "data": {
                    "id_train": {"format": "imagefolder", "path": "shapes/train"},
                    "id_test": {"format": "imagefolder", "path": "shapes/test"},
                    "ood_val": {"format": "csv", "path": "shapes/ood_val.csv"},
                    "ood_tests": {
                        "contrast": {"format": "imagefolder", "path": "shapes/contrast"},
                        "color": {
                            "format": "parquet",
                            "path": "shapes/color.parquet",
                            "group_column": "group",
                        },
                    },
                },
                "id_val_size": 12,
                "ood_val_size": 24,
                "decode_workers": 2,
                **params,
            },
        },
        "search": {"sampler": {"seed": 0, "n_startup_trials": 2}},
        "budget": {
            "trials": 3,
            "inner_steps": 8,
            "eval_every": 4,
            "batch_size": 16,
            "max_concurrent": 2,
            "early_stopping": {"type": "none"},
        },  # fmt: skip
        "final": {**LEAN_FINAL, "steps": 8, "baselines": baselines},
    }


FAMILIES = {
    "timm": ({"family": "timm", "path": "models/timm-vit"}, ["ft", "lp"]),
    "open_clip": ({"family": "open_clip", "path": "models/clip"}, ["ft", "flyp"]),
    "hf": ({"family": "hf", "path": "models/hf-vit"}, ["ft", "lp_ft"]),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_job_runs_end_to_end_for_each_model_family(
    family: str, ray_runtime: None, data_root: Path, tmp_path: Path
) -> None:
    model, baselines = FAMILIES[family]
    settings = Settings(data_dir=tmp_path / "svc", ray_num_cpus=2)
    rec = Recorder()
    spec = image_spec(model, baselines)
    if family == "open_clip":  # AutoFT's contrastive term is searched like the others
        spec["search"]["loss_terms"] = ["ce", "flyp", "l2_init"]
    spec_ = parse_spec(spec, data_roots=[data_root])
    result = Engine(settings).run(spec_, job_id=f"img-{family}", listener=rec)
    if family == "open_clip":
        assert all(e.params["loss/flyp/weight"] > 0 for e in rec.finished)

    assert len(rec.finished) == 3 and {e.state for e in rec.finished} == {"completed"}
    assert [r["method"] for r in result.results] == ["autoft", *baselines]
    for row in result.results:
        for key in ("id_test/accuracy", "ood_val/accuracy", "ood_test/contrast/accuracy",
                    "ood_test/color/worst_group_accuracy", "ood_test/mean/accuracy"):  # fmt: skip
            assert 0.0 <= row[key] <= 1.0, (row["method"], key)
    assert result.model_version == "1"
    # images were decoded once per machine, into the job's cache, as uint8 arrays
    assert list((settings.cache_dir / "images").glob("*.npy"))

    client = MlflowClient(settings.tracking_uri)
    runs = client.search_runs([result.handles.experiment_id], max_results=100)
    assert all(r.info.status == "FINISHED" for r in runs)
    trial_runs = [r for r in runs if r.data.tags.get("autoft.role") == "trial"]
    assert len(trial_runs) == 3
    assert all(r.data.metrics.get("perf/train_images_per_s", 0) > 0 for r in trial_runs)


def _overlapping(events: list[TrialEvent]) -> bool:
    spans = sorted((e.started_at, e.finished_at or e.started_at) for e in events)
    return any(b0 < a1 for (_, a1), (b0, _) in zip(spans, spans[1:], strict=False))


def _packed(resources: dict[str, Any], tmp_path: Path, job_id: str) -> list[TrialEvent]:
    spec = image_spec(FAMILIES["timm"][0], [])
    spec["budget"].update(trials=2, inner_steps=40, eval_every=20)
    spec["resources"] = resources
    rec = Recorder()
    settings = Settings(data_dir=tmp_path / "svc", ray_num_cpus=2)  # AUTOFT_DATA_ROOTS: the fixture's root
    Engine(settings).run(parse_spec(spec, data_roots=settings.data_root_paths), job_id=job_id, listener=rec)
    return rec.finished


def test_fractional_cpu_trials_run_side_by_side(ray_runtime: None, tmp_path: Path) -> None:
    """CPU twin of GPU packing: two 1-CPU trials share the 2-CPU node at the same time."""
    events = _packed({"cpus_per_trial": 1, "gpus_per_trial": 0}, tmp_path, "img-pack-cpu")
    assert len(events) == 2 and _overlapping(events)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_half_gpu_trials_pack_two_per_gpu(ray_runtime: None, tmp_path: Path) -> None:
    import ray

    if ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the Ray runtime has no GPU")
    events = _packed(
        {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "precision": "auto"}, tmp_path, "img-pack-gpu"
    )
    assert len(events) == 2 and _overlapping(events)


def test_spec_outside_the_data_roots_is_rejected(data_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    make_image_folder(outside, CLASSES, 2, seed=0)
    spec = image_spec(FAMILIES["timm"][0], [])
    spec["task"]["params"]["data"]["ood_val"] = {"format": "imagefolder", "path": str(outside)}
    with pytest.raises(InvalidSpec) as e:
        parse_spec(spec, data_roots=[data_root])
    assert e.value.field == "task.params.data.ood_val.path" and "outside the data roots" in str(e.value)

    spec = image_spec({"family": "timm", "path": "models/missing"}, [])
    with pytest.raises(InvalidSpec) as e:
        parse_spec(spec, data_roots=[data_root])
    assert e.value.field == "task.params.model.path" and "does not exist" in str(e.value)


def test_flyp_is_refused_for_a_model_without_a_text_tower(data_root: Path) -> None:
    with pytest.raises(InvalidSpec) as e:
        parse_spec(image_spec(FAMILIES["hf"][0], ["flyp"]), data_roots=[data_root])
    assert e.value.field == "final.baselines.0"
