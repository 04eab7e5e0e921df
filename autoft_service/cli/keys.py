"""``autoft keys create|list|revoke``: API keys, managed directly in the job store ($AUTOFT_* settings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from autoft_service.cli.common import console, out
from autoft_service.errors import AutoFTError

T = TypeVar("T")
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data dir of an embedded job store (default: $AUTOFT_DATA_DIR or ./.autoft)."
    ),
]


keys_app = typer.Typer(
    help="Manage API keys in the job store (run where the store's settings are).", no_args_is_help=True
)


def _store(data_dir: Path | None) -> Any:
    from autoft_service.settings import Settings
    from autoft_service.store import JobStore

    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    settings.ensure_dirs()
    store = JobStore(settings.job_store_url)
    store.init_db()
    return store


def _store_call(data_dir: Path | None, fn: Callable[[Any], T]) -> T:
    try:
        store = _store(data_dir)
        try:
            return fn(store)
        finally:
            store.close()
    except AutoFTError as e:
        console.print(f"[red]error[/red] ({e.code}): {e.message}")
        raise typer.Exit(2) from None


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the key belongs to (sees only its jobs).")],
    name: Annotated[str, typer.Option("--name", help="A label for the key (who or what uses it).")],
    data_dir: DataDir = None,
) -> None:
    """Create an API key and print it (it is shown only once)."""
    key, record = _store_call(data_dir, lambda s: s.create_api_key(tenant, name))
    console.print(
        f"[green]created[/green] key {record.prefix} for tenant {record.tenant!r}; store it now, it is not shown again"
    )
    out.print(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's keys.")] = None,
    data_dir: DataDir = None,
) -> None:
    """List API keys (prefixes only; keys are never stored)."""
    records = _store_call(data_dir, lambda s: s.list_api_keys(tenant))
    table = Table()
    for col in ("prefix", "tenant", "name", "created", "revoked"):
        table.add_column(col)
    for r in records:
        table.add_row(
            r.prefix, r.tenant, r.name, r.created_at.strftime("%Y-%m-%d %H:%M"),
            r.revoked_at.strftime("%Y-%m-%d %H:%M") if r.revoked_at else "",
        )  # fmt: skip
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Prefix (or id) of the key to revoke.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke an API key."""
    record = _store_call(data_dir, lambda s: s.revoke_api_key(key))
    out.print(f"revoked {record.prefix} ({record.tenant})")


def register(app: typer.Typer) -> None:
    """Add the ``keys`` group to the main ``autoft`` CLI."""
    app.add_typer(keys_app, name="keys")
