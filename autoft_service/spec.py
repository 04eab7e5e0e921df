"""The job spec: what a user submits (REST JSON or a YAML file) to run one AutoFT search.

Every part is a strict pydantic model (unknown keys are errors). Cross-field checks that need the registries
(loss-term names, task names and parameters, metrics) live in :func:`validate_spec`, which raises
:class:`~autoft_service.errors.InvalidSpec` naming the dotted field at fault.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from autoft_service.errors import InvalidSpec, invalid_spec_from
from autoft_service.search.selection import SelectionRule

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PositiveFloat = Annotated[float, Field(gt=0)]
#: How several named OOD val sets make one objective (the workers' ``workers.tasks.base.OodAggregate``).
OodAggregate = Literal["mean", "worst"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskRef(_Strict):
    """Which registered task to run, with its parameters (validated by the task's own schema)."""

    name: str = Field(description="Registered task name (see GET /v1/catalog), or 'module:function'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Task parameters.")


class ObjectiveSpec(_Strict):
    """The quantity the search maximises (or minimises), measured on the OOD validation set."""

    metric: str = Field(
        default="ood_val/accuracy",
        description="'<split>/<metric>' with split in id_val, ood_val; metric a registered metric.",
    )
    mode: Literal["max", "min"] = "max"
    id_val_objective: bool = Field(
        default=False,
        description="Multi-objective: also optimise id_val/<metric>; the Pareto front is logged and returned.",
    )
    ood_val_aggregate: OodAggregate = Field(
        default="mean",
        description="When the task has several named OOD val sets: the objective is their 'mean' or "
        "'worst' score (every set is reported as ood_val/<set>/<metric>).",
    )
    max_id_val_drop: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Constraint: a trial's id_val/<metric> may be at most this far below a plain FT run's.",
    )

    @field_validator("metric")
    @classmethod
    def _split_metric(cls, v: str) -> str:
        if not re.fullmatch(r"(id_val|ood_val)/[a-z0-9_]+", v):
            raise ValueError("must look like 'ood_val/<metric>' or 'id_val/<metric>'")
        return v

    @model_validator(mode="after")
    def _multi(self) -> ObjectiveSpec:
        if self.id_val_objective and not self.metric.startswith("ood_val/"):
            raise ValueError("id_val_objective needs an ood_val/<metric> primary objective")
        return self

    @property
    def metrics(self) -> list[str]:
        """Every objective: the primary first."""
        return [self.metric, *([f"id_val/{self.metric_name}"] if self.id_val_objective else [])]

    @property
    def modes(self) -> list[str]:
        return [self.mode] * len(self.metrics)

    @property
    def metric_name(self) -> str:
        return self.metric.split("/", 1)[1]


class SamplerSpec(_Strict):
    """The Optuna sampler. TPE is seeded so a search is reproducible."""

    type: Literal["tpe", "random"] = "tpe"
    seed: StrictInt = Field(default=0, ge=0, le=2**31 - 1)
    multivariate: bool = True
    n_startup_trials: StrictInt = Field(default=8, ge=1, le=10_000, description="Random trials before TPE.")


class Range(_Strict):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self


class LRSpec(_Strict):
    """Learning rate: log-uniform in [base*relative_range[0], base*relative_range[1]], or fixed.

    ``base`` is the highest LR at which plain fine-tuning of the model is stable (for AdamW on a pretrained
    backbone typically 1e-5 to 3e-3; the baselines' LR grid is relative to it). The default range searches
    two decades *below* it: objectives with strong regularisers need smaller steps, and trials above the
    stable LR only destroy the pretrained features and waste budget."""

    base: PositiveFloat = Field(
        default=3e-3, description="The highest stable plain fine-tuning LR; ranges and grids are relative to it."
    )
    relative_range: tuple[PositiveFloat, PositiveFloat] | None = Field(
        default=(0.01, 1.0),
        description="Searched LR range as multiples of base (log-uniform); null: the LR is fixed at base.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> LRSpec:
        if self.relative_range is not None and not self.relative_range[0] < self.relative_range[1]:
            raise ValueError("relative_range: low must be < high")
        return self


class SearchSpec(_Strict):
    """The AutoFT search space: loss-term weights, learning rate, weight decay, seed."""

    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    loss_terms: list[str] = Field(
        default_factory=lambda: ["ce", "hinge", "entropy", "dcm", "l1_init", "l2_init", "l1_zero", "l2_zero"],
        min_length=1,
        description="Registered loss terms whose weights are searched. 'ce' has its weight fixed to 1.",
    )
    fixed_weights: dict[str, float] = Field(
        default_factory=lambda: {"ce": 1.0},
        description="Terms whose weight is fixed (not searched).",
    )
    weight_range: tuple[PositiveFloat, PositiveFloat] = (1e-4, 10.0)
    lr: LRSpec = Field(default_factory=LRSpec)
    weight_decay: tuple[float, float] | float = (0.0, 1.0)
    seed: tuple[StrictInt, StrictInt] | StrictInt = (0, 10)
    methods: list[str] = Field(
        default_factory=list,
        max_length=12,
        description=(
            "Fine-tuning methods the search may choose instead of plain AdamW (categorical 'method'), each "
            "with its own hyperparameters searched (e.g. spd -> method/spd/strength; layerwise -> per-group "
            "LR multipliers and distance penalties)."
        ),
    )
    warm_start_from: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Earlier job ids whose completed trials seed the sampler (not counted in the budget).",
    )

    @field_validator("loss_terms")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("loss terms must be unique")
        return v

    @field_validator("weight_range")
    @classmethod
    def _wr(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"low ({v[0]}) must be < high ({v[1]})")
        return v

    @field_validator("weight_decay")
    @classmethod
    def _wd(cls, v: tuple[float, float] | float) -> tuple[float, float] | float:
        lo, hi = (v, v) if isinstance(v, (int, float)) else v
        if lo < 0 or hi < 0:
            raise ValueError("weight decay must be >= 0")
        if not isinstance(v, (int, float)) and not lo < hi:
            raise ValueError(f"low ({lo}) must be < high ({hi})")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: tuple[int, int] | int) -> tuple[int, int] | int:
        if not isinstance(v, int) and not v[0] <= v[1]:
            raise ValueError(f"low ({v[0]}) must be <= high ({v[1]})")
        return v

    @field_validator("fixed_weights")
    @classmethod
    def _fw(cls, v: dict[str, float]) -> dict[str, float]:
        for k, w in v.items():
            if w < 0:
                raise ValueError(f"weight of {k!r} must be >= 0")
        return v


class EarlyStopping(_Strict):
    """ASHA over inner steps: a trial is stopped at a rung when it is not in the top 1/reduction_factor."""

    type: Literal["asha", "none"] = "asha"
    grace_steps: StrictInt = Field(default=40, ge=1)
    reduction_factor: StrictInt = Field(default=2, ge=2, le=16)


class BudgetSpec(_Strict):
    """How much search to do and how it is spread over the cluster."""

    trials: StrictInt = Field(default=24, ge=1, le=10_000)
    inner_steps: StrictInt = Field(
        default=120, ge=1, le=1_000_000, description="Fine-tuning steps per trial."
    )
    eval_every: StrictInt = Field(
        default=20, ge=1, description="Steps between OOD-val evaluations (ASHA rungs)."
    )
    batch_size: StrictInt = Field(default=64, ge=1, le=65_536)
    max_concurrent: StrictInt = Field(default=2, ge=1, le=1024)
    max_failures: StrictInt = Field(default=1, ge=0, le=100, description="Retries of a crashed trial.")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)

    @model_validator(mode="after")
    def _steps(self) -> BudgetSpec:
        if self.eval_every > self.inner_steps:
            raise ValueError(f"eval_every ({self.eval_every}) must be <= inner_steps ({self.inner_steps})")
        if self.early_stopping.type == "asha" and self.early_stopping.grace_steps > self.inner_steps:
            raise ValueError(
                f"early_stopping.grace_steps ({self.early_stopping.grace_steps}) must be <= inner_steps"
            )
        return self


class ResourcesSpec(_Strict):
    cpus_per_trial: float = Field(default=1.0, gt=0, le=512)
    gpus_per_trial: float = Field(default=0.0, ge=0, le=16, description="Fractions pack trials per GPU.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Training precision: auto = bf16 autocast on a GPU that supports it, fp32 elsewhere.",
    )


class BaselineSpec(_Strict):
    """A fine-tuning method run on the final-stage budget for comparison (see GET /v1/catalog)."""

    name: str = Field(
        description="Registered method: ft, lp, lp_ft, l2_sp, delta, tpgm, ftp, spd, wise_ft, ..."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The method's hyperparameters.")
    label: str | None = Field(default=None, pattern=NAME_PATTERN, description="Row name (default: name).")

    @property
    def row(self) -> str:
        return self.label or self.name


class ReevalSpec(_Strict):
    """Overfitting guard: re-run the top-k trials with extra seeds and pick the best mean OOD-val score."""

    top_k: StrictInt = Field(default=0, ge=0, le=50, description="0 disables the guard.")
    seeds: list[StrictInt] = Field(default_factory=lambda: [1001, 1002], min_length=1, max_length=10)


class FinalSpec(_Strict):
    """The final stage: retrain with the best objective and compare against baselines on the same budget."""

    steps: StrictInt = Field(default=600, ge=1, le=10_000_000)
    reevaluate: ReevalSpec = Field(default_factory=ReevalSpec)
    baselines: list[BaselineSpec] = Field(
        default_factory=lambda: [BaselineSpec(name=n) for n in ("ft", "lp", "lp_ft")],
        max_length=32,
        description="Methods to compare on the same budget: names, or {name, params, label}.",
    )
    baseline_weight_decay: float = Field(default=0.1, ge=0, description="AdamW decay of ft / lp_ft.")
    baseline_lr_grid: list[PositiveFloat] = Field(
        default_factory=lambda: [0.1, 0.3, 1.0],
        min_length=1,
        max_length=10,
        description="LRs (multiples of search.lr.base) each trained baseline tries; the row keeps the one "
        "best on ID val (the baselines never see OOD data). lp is a closed-form probe and needs none.",
    )
    selection: SelectionRule = Field(
        default="one_se",
        description="Choosing the final objective among trials: 'one_se' takes, among trials within one "
        "binomial standard error of the best OOD-val score, the one closest to the pretrained weights; "
        "'best' the raw best.",
    )
    wise_ft_alphas: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: [round(0.1 * i, 1) for i in range(11)],
        max_length=101,
        description="WiSE-FT between the starting model (α = 0) and the AutoFT model (α = 1): θ(α) = "
        "(1−α)θ0 + αθ, α picked on OOD val (the row 'autoft_wise_ft'); empty: off.",
    )
    soup_top_k: StrictInt = Field(
        default=3,
        ge=0,
        le=10,
        description="Greedy soup: retrain the top-k trial objectives and average their weights greedily in "
        "order of OOD val while it does not drop (the row 'autoft_soup'); 0 or 1: off.",
    )
    register_model: bool = True

    @field_validator("baselines", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return [{"name": b} if isinstance(b, str) else b for b in v] if isinstance(v, list) else v

    @field_validator("baselines")
    @classmethod
    def _unique(cls, v: list[BaselineSpec]) -> list[BaselineSpec]:
        rows = [b.row for b in v]
        if len(set(rows)) != len(rows) or "autoft" in rows:
            raise ValueError(
                "baseline rows must be unique and not 'autoft' (set a label to run a method twice)"
            )
        return v


class JobSpec(_Strict):
    """One AutoFT job."""

    name: str = Field(
        pattern=NAME_PATTERN, description="Human-readable job name (also the MLflow experiment)."
    )
    task: TaskRef
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    final: FinalSpec = Field(default_factory=FinalSpec)


def parse_spec(data: Any, *, data_roots: Sequence[str | Path] = ()) -> JobSpec:
    """Parse and fully validate a spec from a dict; raise ``InvalidSpec`` naming the first bad field.

    ``data_roots`` are the folders the job may read files from (the service passes its configured
    ``settings.data_root_paths``); a spec that names a file is refused when none are given."""
    if not isinstance(data, dict):
        raise InvalidSpec("a job spec must be a mapping", field="")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        raise invalid_spec_from(e) from None
    validate_spec(spec, data_roots=data_roots)
    return spec


def load_spec_file(path: str | Path, *, data_roots: Sequence[str | Path] = ()) -> JobSpec:
    """Read a YAML (or JSON) spec file and validate it as :func:`parse_spec` does."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InvalidSpec(f"cannot read spec file {str(p)!r}: {e.strerror}", field="spec") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidSpec(f"spec file {str(p)!r} is not valid YAML: {e}", field="spec") from None
    return parse_spec(data, data_roots=data_roots)


def validate_spec(spec: JobSpec, *, data_roots: Sequence[str | Path] = ()) -> None:
    """Checks that need the registries: every name resolves and the task's parameters are valid (files the
    task names must lie inside ``data_roots``)."""
    from workers.loss_terms import LOSS_TERMS
    from workers.metrics import METRICS
    from workers.tasks import resolve_task

    for i, term in enumerate(spec.search.loss_terms):
        LOSS_TERMS.get(term, field=f"search.loss_terms.{i}")
    from workers.ft_methods import create_method

    for i, name in enumerate(spec.search.methods):
        m = create_method(name, {}, field=f"search.methods.{i}")
        if m.requires_text_tower or not m.searchable:
            raise InvalidSpec(
                f"search.methods.{i}: {name!r} cannot be a searched training method",
                field=f"search.methods.{i}",
            )
    for term in spec.search.fixed_weights:
        LOSS_TERMS.get(term, field=f"search.fixed_weights.{term}")
    if not spec.search.loss_terms and not spec.search.fixed_weights:
        raise InvalidSpec("at least one loss term is needed", field="search.loss_terms")
    METRICS.get(spec.objective.metric_name, field="objective.metric")
    task_cls = resolve_task(spec.task.name, field="task.name")
    task_params = task_cls.validate_params(spec.task.params, field="task.params", data_roots=data_roots)
    text_tower = task_cls.supports_text_tower(task_params)
    searched = [(f"search.loss_terms.{i}", t) for i, t in enumerate(spec.search.loss_terms)]
    fixed = [(f"search.fixed_weights.{t}", t) for t, w in spec.search.fixed_weights.items() if w != 0.0]
    for where, term in [*searched, *fixed]:
        if LOSS_TERMS.get(term, field=where).needs_text_tower and not text_tower:
            raise InvalidSpec(
                f"{where}: loss term {term!r} needs a dual-encoder (CLIP-like) model with a text tower; "
                f"task {spec.task.name!r} has none",
                field=where,
            )
    for i, b in enumerate(spec.final.baselines):
        method = create_method(b.name, b.params, field=f"final.baselines.{i}")
        if method.requires_text_tower and not text_tower:
            raise InvalidSpec(
                f"final.baselines.{i}: {b.name!r} needs a dual-encoder (CLIP-like) model with a text tower; "
                f"task {spec.task.name!r} has none",
                field=f"final.baselines.{i}",
            )
