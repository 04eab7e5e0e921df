"""Search quality on the demo task: FT, LP, LP-FT and AutoFT over several seeds (ID and OOD accuracy).

Each seed is a whole job (search + final stage) with the demo spec; the seed drives the TPE sampler and the
downstream data split. Prints one table: mean ± std over seeds, in percent.

    python -m benchmarks.search_quality [--seeds 0 1 2] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autoft_service.engine import Engine
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from benchmarks._common import demo_spec_dict, mean_std

#: Every registered method that runs on the demo CNN (FLYP needs a text tower), WiSE-FT over FT and LP-FT.
ALL_METHODS = [
    "ft", "lp", "lp_ft", "l2_sp", "delta", "tpgm", "ftp", "spd", "layerwise",
    {"name": "wise_ft", "params": {"base": "ft"}, "label": "wise_ft-ft"},
    {"name": "wise_ft", "params": {"base": "lp_ft"}, "label": "wise_ft-lp_ft"},
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--trials", type=int, default=None, help="override the demo's number of trials")
    ap.add_argument(
        "--all-methods", action="store_true",
        help="compare every registered fine-tuning method (issue: the method library), not only FT/LP/LP-FT",
    )  # fmt: skip
    args = ap.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="autoft-bench-"))
    settings = Settings(data_dir=data_dir)
    rows: dict[str, dict[str, list[float]]] = {}
    times = []
    for seed in args.seeds:
        d = demo_spec_dict()
        d["name"] = f"bench-quality-s{seed}"
        d["search"]["sampler"]["seed"] = seed
        d["task"]["params"]["split_seed"] = seed
        if args.trials:
            d["budget"]["trials"] = args.trials
        d["final"]["register_model"] = False
        if args.all_methods:
            d["final"]["baselines"] = ALL_METHODS
        t0 = time.time()
        result = Engine(settings).run(parse_spec(d), job_id=f"quality-{seed}-{int(t0)}")
        times.append(time.time() - t0)
        for r in result.results:
            acc = rows.setdefault(r["method"], {"id": [], "ood_val": [], "ood": []})
            acc["id"].append(r["id_test/accuracy"])
            acc["ood_val"].append(r["ood_val/accuracy"])
            acc["ood"].append(r["ood_test/mean/accuracy"])
    table = Table(title=f"Demo task, {len(args.seeds)} seeds: test accuracy (%), mean ± std")
    for col in ("method", "ID test", "OOD val", "OOD test (mean of 5 shifts)"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for method, acc in rows.items():
        table.add_row(method, mean_std(acc["id"]), mean_std(acc["ood_val"]), mean_std(acc["ood"]))
    console = Console(width=120)
    console.print(table)
    console.print(f"wall time per job: {', '.join(f'{t:.0f}s' for t in times)}")


if __name__ == "__main__":
    main()
