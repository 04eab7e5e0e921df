"""``--set PATH=VALUE`` overrides of a job spec: a dotted path into the spec and a YAML value.

``budget.trials=6`` sets ``spec["budget"]["trials"] = 6``; the value is read as YAML (``6`` is an integer,
``'6'`` a string, ``[ft, lp]`` a list, ``null`` None). A path must name a field of
:class:`~autoft_service.spec.JobSpec` (free-form mappings such as ``task.params`` accept any key below them);
the overridden spec is then validated like any spec, so a bad value is refused before it is sent.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from autoft_service.errors import InvalidSpec
from autoft_service.spec import JobSpec


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` → ``(["a", "b"], 1)``; ``InvalidSpec`` (field ``--set``) when it is not ``PATH=VALUE``."""
    path, sep, raw = item.partition("=")
    parts = path.strip().split(".")
    if not sep or not path.strip() or any(not p.strip() for p in parts):
        raise InvalidSpec(f"--set {item!r}: expected PATH=VALUE, e.g. budget.trials=6", field="--set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise InvalidSpec(f"--set {item!r}: the value is not valid YAML: {e}", field=path) from None
    return [p.strip() for p in parts], value


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (``X``, ``X | None``, ``list[X]`` …)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [m for a in typing.get_args(annotation) for m in _models(a)]
    return []


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_is_mapping(a) for a in typing.get_args(annotation))
    return annotation is Any or origin is dict or annotation is dict


def check_path(parts: list[str]) -> None:
    """``InvalidSpec`` naming the path when it is not a field of the job spec."""
    model: type[BaseModel] = JobSpec
    for i, name in enumerate(parts):
        info = model.model_fields.get(name)
        where = ".".join(parts[: i + 1])
        if info is None:
            inside = f" in {'.'.join(parts[:i])!r}" if i else ""
            raise InvalidSpec(
                f"--set: unknown spec field {where!r}; valid{inside}: {', '.join(model.model_fields)}",
                field=where,
            )
        if i == len(parts) - 1 or _is_mapping(info.annotation):
            return
        nested = _models(info.annotation)
        if not nested:
            raise InvalidSpec(
                f"--set: {where!r} is a value, it has no field {parts[i + 1]!r}",
                field=".".join(parts[: i + 2]),
            )
        model = nested[0]


def apply_overrides(data: Any, items: Sequence[str]) -> dict[str, Any]:
    """A copy of the spec mapping ``data`` with every ``PATH=VALUE`` of ``items`` applied, validated like a
    job spec (its structure and types; names are checked by the server). ``InvalidSpec`` names the field.
    Without ``items``, ``data`` is returned as it is."""
    if not items:
        return data  # type: ignore[no-any-return]
    if not isinstance(data, dict):
        raise InvalidSpec("a job spec must be a mapping", field="body")
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data))  # a deep copy of plain data
    for item in items:
        parts, value = parse_override(item)
        check_path(parts)
        node = out
        for i, name in enumerate(parts[:-1]):
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise InvalidSpec(f"--set {item!r}: {where!r} in the spec is not a mapping", field=where)
            node = child
        node[parts[-1]] = value
    try:
        JobSpec.model_validate(out)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        raise InvalidSpec(f"{where}: {err['msg']}", field=where) from None
    return out
