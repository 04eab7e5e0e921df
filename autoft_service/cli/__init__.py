"""The ``autoft`` command line: local runs (no server), the service's processes and its client commands.

``common`` (consoles, options, parsing, formatting) is imported by every command module; ``local`` (run,
demo, validate), ``serve`` (serve, runner), ``cache``, ``service`` (submit, status, watch, cancel, extend,
retry) and ``keys`` each add their commands in ``register(app)``; ``app`` assembles them.
"""

from __future__ import annotations

from autoft_service.cli.app import app, main
from autoft_service.cli.common import parse_duration, parse_size, results_table
from autoft_service.cli.local import ProgressListener, demo_spec_path

__all__ = [
    "ProgressListener",
    "app",
    "demo_spec_path",
    "main",
    "parse_duration",
    "parse_size",
    "results_table",
]
