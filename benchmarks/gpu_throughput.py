"""Fine-tuning throughput of a trial through the engine vs a raw PyTorch loop, and trials packed per GPU.

Same model (a timm architecture, randomly initialised and saved as local weights), same uint8 images
(decoded once into the cache), same batch size, same precision and memory format (bf16 autocast and
channels-last on CUDA), same optimizer; measured side by side in one run:

1. raw: a plain loop over the task's data (model, AdamW, cross-entropy), images/s after a warm-up;
2. engine: one job through Engine.run (Ray Tune + Optuna + MLflow) with a CE-only objective; the trial
   reports ``perf/train_images_per_s`` at every evaluation, with evaluation time excluded; the first lap
   (warm-up) is dropped;
3. packing (CUDA only): K trials at once with ``gpus_per_trial = 1/K``; the aggregate images/s.

    python -m benchmarks.gpu_throughput [--arch vit_base_patch16_224] [--batch-size 128] [--steps 200]

Without a CUDA device it says so and measures a tiny model on the CPU instead (the ratio is still
meaningful; the absolute numbers are not GPU numbers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from autoft_service.engine import Engine, ensure_ray
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from workers.accel import Accel
from workers.images.synthetic_data import make_image_folder
from workers.images.tiny_models import save_tiny_timm
from workers.prepared import prepared_task


def raw_loop(prepared: Any, accel: Accel, batch_size: int, steps: int, warmup: int) -> float:
    """Images/s of a plain PyTorch loop on the task's ID-train data: after ``warmup`` steps, the median of
    laps of ``steps // 4`` steps (as the engine's trial reports them)."""
    import copy

    data = prepared.data
    model = torch.nn.Sequential(
        copy.deepcopy(data.backbone), torch.nn.Linear(data.feature_dim, data.num_classes)
    )
    accel.place(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    n = len(data.id_train)
    x_all, y_all = data.id_train.x, data.id_train.y

    def step() -> None:
        idx = torch.randint(0, n, (batch_size,), generator=g)
        x, y = accel.inputs(x_all[idx]), y_all[idx].to(accel.device, non_blocking=True)
        with accel.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if accel.device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    # the engine's way: laps of steps // 4, the first dropped, the median kept
    lap_steps, rates = max(1, steps // 4), []
    for _ in range(4):
        sync()
        t0 = time.perf_counter()
        for _ in range(lap_steps):
            step()
        sync()
        rates.append(lap_steps * batch_size / (time.perf_counter() - t0))
    return statistics.median(rates[1:])


def job_spec(model_dir: Path, data: str, *, batch_size: int, steps: int, k: int, gpu: bool) -> dict[str, Any]:
    return {
        "name": f"bench-throughput-k{k}",
        "task": {"name": "image-classification", "params": {
            "model": {"family": "timm", "path": str(model_dir)},
            "data": {"id_train": {"format": "imagefolder", "path": f"{data}/train"},
                     "id_val": {"format": "imagefolder", "path": f"{data}/val"},
                     "id_test": {"format": "imagefolder", "path": f"{data}/val"},
                     "ood_val": {"format": "imagefolder", "path": f"{data}/val"}},
            "head_init": "lp",
        }},
        "search": {"loss_terms": ["ce"], "fixed_weights": {"ce": 1.0}, "sampler": {"seed": 0}},
        "budget": {"trials": k, "inner_steps": steps, "eval_every": max(1, steps // 4), "batch_size": batch_size,
                   "max_concurrent": k, "early_stopping": {"type": "none"}},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": (1.0 / k) if gpu else 0.0},
        "final": {"steps": 1, "baselines": [], "register_model": False},
    }  # fmt: skip


def engine_rates(settings: Settings, spec: dict[str, Any], job_id: str) -> tuple[list[float], float]:
    """Per-trial steady images/s (median of the laps after the first) and the search-stage seconds."""
    from mlflow.tracking import MlflowClient

    result = Engine(settings).run(parse_spec(spec, data_roots=settings.data_root_paths), job_id=job_id)
    client = MlflowClient(settings.tracking_uri)
    experiment_id = result.handles.experiment_id
    assert experiment_id is not None, "a finished job has its MLflow experiment"
    runs = client.search_runs([experiment_id], "tags.`autoft.role` = 'trial'")
    rates = []
    for r in runs:
        hist = sorted(
            client.get_metric_history(r.info.run_id, "perf/train_images_per_s"), key=lambda m: m.step
        )
        laps = [m.value for m in hist[1:]] or [m.value for m in hist]
        rates.append(statistics.median(laps))
    return rates, result.durations.get("search_s", float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default=None, help="timm architecture (default: vit_base_patch16_224 on CUDA)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--images", type=int, default=None, help="ID-train images (generated)")
    ap.add_argument("--pack", default="1,2,4", help="trials per GPU to try (CUDA only)")
    args = ap.parse_args()
    console = Console()
    cuda = torch.cuda.is_available()
    if cuda:
        arch = args.arch or "vit_base_patch16_224"
        size, model_args = 224, {}
        bs, steps, n_images = args.batch_size or 128, args.steps or 200, args.images or 2048
        console.print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    else:
        console.print("[bold yellow]No CUDA device: measuring a tiny model on the CPU instead. These are not "
                      "GPU numbers; run this on a CUDA machine for those.[/]")  # fmt: skip
        arch = args.arch or "vit_tiny_patch16_224"
        size, model_args = 32, {"img_size": 32, "patch_size": 8, "depth": 4}
        bs, steps, n_images = args.batch_size or 32, args.steps or 160, args.images or 256

    root = Path(tempfile.mkdtemp(prefix="autoft-throughput-"))
    os.environ["AUTOFT_DATA_ROOTS"] = str(root)  # read by Settings below; the engine passes it to the workers
    # full-size architecture on CUDA (random weights: throughput does not depend on their values)
    model_dir = save_tiny_timm(root / "model", image_size=size, arch=arch, model_args=model_args)
    classes = [f"c{i}" for i in range(10)]
    make_image_folder(root / "data" / "train", classes, max(1, n_images // len(classes)), size=size, seed=0)
    make_image_folder(root / "data" / "val", classes, 4, size=size, seed=1)

    settings = Settings(data_dir=root / "svc", ray_num_cpus=os.cpu_count() or 2)
    spec1 = job_spec(model_dir, "data", batch_size=bs, steps=steps, k=1, gpu=cuda)
    roots = settings.data_root_paths
    parsed = parse_spec(spec1, data_roots=roots)
    from workers.tasks import resolve_task

    resolve_task(parsed.task.name).create(parsed.task.params, settings.cache_dir, data_roots=roots).prepare()
    accel = Accel.for_run(torch.device("cuda" if cuda else "cpu"), "auto", cpu_threads=1)
    torch.set_num_threads(1)
    prepared = prepared_task(
        parsed.task.name, parsed.task.params, str(settings.cache_dir), accel.device, data_roots=roots
    )
    raw = raw_loop(prepared, accel, bs, steps, warmup=max(5, steps // 10))
    del prepared
    if cuda:
        torch.cuda.empty_cache()

    ensure_ray(settings)
    rates, _ = engine_rates(settings, spec1, f"throughput-k1-{int(time.time())}")
    table = Table(title=f"{arch}, batch {bs}, {steps} steps, precision {accel.precision}, "
                        f"channels_last {accel.channels_last}")  # fmt: skip
    for c in ("runner", "trials / GPU", "images/s per trial", "images/s total", "ratio to raw"):
        table.add_column(c)
    table.add_row("raw PyTorch loop", "-", f"{raw:.1f}", f"{raw:.1f}", "1.00")
    table.add_row(
        "engine trial", "1" if cuda else "-", f"{rates[0]:.1f}", f"{rates[0]:.1f}", f"{rates[0] / raw:.2f}"
    )
    if cuda:
        for k in [int(v) for v in args.pack.split(",") if int(v) > 1]:
            spec = job_spec(model_dir, "data", batch_size=bs, steps=steps, k=k, gpu=True)
            rk, _ = engine_rates(settings, spec, f"throughput-k{k}-{int(time.time())}")
            total = sum(rk)
            table.add_row(f"engine, {k} packed", str(k), f"{statistics.mean(rk):.1f}", f"{total:.1f}",
                          f"{total / raw:.2f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
