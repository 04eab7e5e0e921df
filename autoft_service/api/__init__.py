"""The REST API: routes (thin), authentication, error mapping and metrics."""

from __future__ import annotations

from autoft_service.api.app import create_app

__all__ = ["create_app"]
