"""The ``autoft`` typer app: every command group added in the order ``autoft --help`` lists them."""

from __future__ import annotations

import typer

from autoft_service.cli import cache, keys, local, serve, service

app = typer.Typer(
    help="autoft-service: search robust fine-tuning objectives (AutoFT) on Ray Tune + Optuna + MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for module in (local, serve, cache, service, keys):
    module.register(app)


def main() -> None:
    """The ``autoft`` console script."""
    app(prog_name="autoft")
