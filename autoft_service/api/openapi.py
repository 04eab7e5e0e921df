"""The OpenAPI document: FastAPI's, plus the job spec schema with the registries' names filled in.

``POST /v1/jobs`` reads its body itself (so spec errors name the dotted field), so the ``JobSpec`` schema is
added here, with enums for loss-term, metric and task names and one branch per task with its own parameter
schema, so a client (or a fuzzer) sees exactly what the server accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from autoft_service.api.auth import SECURITY_SCHEMES, security_requirements
from autoft_service.spec import JobSpec

REF = "#/components/schemas/{model}"


def job_spec_schemas() -> dict[str, Any]:
    """``JobSpec`` and the schemas it refers to, by component name."""
    from workers.loss_terms import LOSS_TERMS
    from workers.metrics import METRICS
    from workers.tasks import list_tasks, resolve_task

    root = JobSpec.model_json_schema(ref_template=REF)
    defs: dict[str, Any] = root.pop("$defs", {})
    defs["JobSpec"] = root

    terms = LOSS_TERMS.names()
    search = defs["SearchSpec"]["properties"]
    search["loss_terms"]["items"] = {"type": "string", "enum": terms}
    search["fixed_weights"]["propertyNames"] = {"enum": terms}
    metric = defs["ObjectiveSpec"]["properties"]["metric"]
    metric.pop("pattern", None)
    metric["enum"] = [f"{split}/{m}" for split in ("ood_val", "id_val") for m in METRICS.names()]

    branches = []
    for name in list_tasks():
        params = resolve_task(name).Params.model_json_schema(ref_template=REF)
        defs.update(params.pop("$defs", {}))
        branches.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": {"const": name}, "params": params},
            }
        )
    task_ref = defs["TaskRef"]
    defs["TaskRef"] = {"description": task_ref.get("description", ""), "title": "TaskRef", "oneOf": branches}
    return defs


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that adds the job spec schemas (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(job_spec_schemas())
            add_security(schema, app)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _calls(dependant: Dependant) -> set[Any]:
    calls: set[Any] = set()
    for sub in dependant.dependencies:
        calls.add(sub.call)
        calls |= _calls(sub)
    return calls


def add_security(schema: dict[str, Any], app: FastAPI) -> None:
    """List the API-key schemes on every operation that authenticates through the ``Tenant`` dependency
    (it reads the headers itself, so FastAPI does not see them), and the schemes themselves."""
    paths = schema.get("paths", {})
    used = False
    # Routes of included routers, with their prefix (FastAPI >= 0.160 keeps included routers as such).
    contexts: Any = getattr(routing, "iter_route_contexts", lambda routes: routes)(app.routes)
    for route in contexts:
        original = getattr(route, "original_route", route)
        if not (isinstance(original, APIRoute) and original.include_in_schema):
            continue
        security = security_requirements(_calls(original.dependant))
        if not security:
            continue
        for method in original.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None:
                operation["security"] = security
                used = True
    if used:
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        for scheme in SECURITY_SCHEMES:
            schemes[scheme.scheme_name] = jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
