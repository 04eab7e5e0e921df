"""HTTP status by error class: a new subclass of a known error inherits its parent's status."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from autoft_service import errors
from autoft_service.api.errors_http import STATUS_BY_CLASS, install_error_handlers, status_for
from workers import errors as plugin_errors


class UnknownScheduler(errors.UnknownName):
    """A registry kind the table has never heard of."""

    code = "unknown_scheduler"


class TrialGone(errors.TrialNotFound):
    code = "trial_gone"


class Oops(errors.AutoFTError):
    code = "oops"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidSpec("x"), 422),
        (errors.UnknownLossTerm("x"), 422),
        (errors.UnknownFTMethod("x"), 422),
        (UnknownScheduler("x"), 422),  # a new subclass: its parent's status, not 500
        (TrialGone("x"), 404),
        (errors.JobStateConflict("x"), 409),
        (errors.Unauthorized("x"), 401),
        (errors.BackendUnavailable("x"), 503),
        (errors.SearchFailed("x"), 500),
        (errors.DuplicateRegistration("x"), 500),
        (Oops("x"), 500),
    ],
)
def test_status_follows_the_class_hierarchy(error: errors.AutoFTError, status: int) -> None:
    assert status_for(error) == status


def test_a_listed_subclass_wins_over_its_parent() -> None:
    assert STATUS_BY_CLASS[errors.InvalidSpec] == 422
    assert status_for(errors.UnknownTask("x")) == 422


def test_plugin_errors_are_the_service_errors() -> None:
    """``workers.errors`` holds the plug-in hierarchy; the service re-exports the very same classes."""
    for name in ("AutoFTError", "InvalidSpec", "UnknownName", "UnknownTask", "DuplicateRegistration"):
        assert getattr(errors, name) is getattr(plugin_errors, name)
    assert errors.invalid_spec_from is plugin_errors.invalid_spec_from


def test_a_new_subclass_answers_its_parents_status_over_http() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise UnknownScheduler("unknown scheduler 'x'; valid: asha", field="budget.scheduler")

    r = TestClient(app).get("/boom")
    assert r.status_code == 422
    assert r.json()["error"] == {
        "code": "unknown_scheduler",
        "message": "unknown scheduler 'x'; valid: asha",
        "field": "budget.scheduler",
        "details": None,
    }


def test_one_translator_from_pydantic_errors() -> None:
    from pydantic import BaseModel, ConfigDict, ValidationError

    class P(BaseModel):
        model_config = ConfigDict(extra="forbid")
        steps: int
        rate: float = 1.0

    with pytest.raises(ValidationError) as e:
        P.model_validate({"steps": "many", "rate": "fast"})
    err = plugin_errors.invalid_spec_from(e.value, "task.params")
    assert isinstance(err, errors.InvalidSpec) and err.field == "task.params.steps"
    assert err.message.startswith("task.params.steps: ")
    assert [d["field"] for d in err.details] == ["task.params.steps", "task.params.rate"]
    assert plugin_errors.invalid_spec_from(e.value).field == "steps"  # no prefix: the spec's own fields


def test_spec_task_and_method_errors_come_from_the_one_translator() -> None:
    """All three carry every pydantic error in ``details`` (the translator's shape)."""
    from autoft_service.spec import parse_spec
    from tests.conftest import small_spec
    from workers.ft_methods import create_method
    from workers.tasks import resolve_task

    with pytest.raises(errors.InvalidSpec) as spec_err:
        parse_spec(small_spec(budget={"trials": 0}))
    with pytest.raises(errors.InvalidSpec) as task_err:
        resolve_task("digits-shift").validate_params({"shots_per_class": 0})
    with pytest.raises(errors.InvalidSpec) as method_err:
        create_method("spd", {"nope": 1}, field="final.baselines.0")
    assert spec_err.value.field == "budget.trials" and spec_err.value.details[0]["field"] == "budget.trials"
    assert task_err.value.details[0]["field"] == task_err.value.field == "task.params.shots_per_class"
    assert method_err.value.details[0]["field"] == method_err.value.field == "final.baselines.0.params.nope"
