"""The Ray runtime the engine runs on: a cluster at ``RAY_ADDRESS`` or a private local one."""

from __future__ import annotations

import logging
import os

from autoft_service.errors import BackendUnavailable
from autoft_service.settings import Settings


def ensure_ray(settings: Settings) -> None:
    """Connect to ``RAY_ADDRESS`` or start a local runtime bound to loopback (idempotent)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    if ray.is_initialized():
        return
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private runtime on 127.0.0.1 only
            ray.init(
                address="local",  # always a private runtime, never a cluster that happens to run here
                num_cpus=settings.ray_num_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
    except Exception as e:  # connection errors come in many types
        raise BackendUnavailable(f"cannot start or reach Ray ({settings.ray_address or 'local'}): {e}") from e
