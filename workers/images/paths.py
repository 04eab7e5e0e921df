"""Confinement of user-given paths to the configured data roots.

A job spec may name weights files, image folders and manifests; a manifest names image files. Every one of
them must resolve (symlinks followed) to a location inside one of the data roots, so a spec cannot make the
service read ``/etc/passwd`` or another tenant's data. Relative paths are taken relative to the first root.

The roots are always given by the caller (the service passes its configured ``AUTOFT_DATA_ROOTS``: to spec
validation as the pydantic validation context, to a worker in its ``WorkerContext``); nothing here reads the
environment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from workers.errors import InvalidSpec


def spec_error(field: str, message: str) -> InvalidSpec:
    """The error for a bad value at ``field`` of a job spec: ``"<field>: <message>"``, a 4xx naming it."""
    return InvalidSpec(f"{field}: {message}", field=field)


def _inside(p: Path, roots: Sequence[Path]) -> bool:
    return any(p.is_relative_to(r) for r in roots)  # a root is relative to itself


def confine(
    path: str | os.PathLike[str],
    roots: Sequence[Path],
    *,
    field: str,
    base: Path | None = None,
    must_exist: bool = True,
    kind: str = "path",
) -> Path:
    """Resolve ``path`` and return it if it lies inside one of ``roots``; else raise ``InvalidSpec(field)``.

    A relative ``path`` is taken relative to ``base`` (default: the first root). Symlinks are followed
    before the check, so a link inside a root that points outside is refused.
    """
    if not roots:
        raise spec_error(
            field, "no data roots are configured; set AUTOFT_DATA_ROOTS to the folders jobs may read"
        )
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    try:
        raw = Path(os.fspath(path))
        if not raw.is_absolute():
            raw = (base if base is not None else real_roots[0]) / raw
        resolved = Path(os.path.realpath(raw))
        inside = _inside(resolved, real_roots)
        exists = inside and (not must_exist or resolved.exists())
    except (OSError, ValueError) as e:  # NUL bytes, names too long, unreadable parents …
        raise InvalidSpec(
            f"{field}: {kind} {str(path)[:200]!r} is not a usable path ({e})", field=field
        ) from None
    if not inside:
        shown = os.pathsep.join(str(r) for r in real_roots)
        raise spec_error(field, f"{kind} {str(path)!r} is outside the data roots ({shown})")
    if not exists:
        raise spec_error(field, f"{kind} {str(path)!r} does not exist ({resolved})")
    return resolved
