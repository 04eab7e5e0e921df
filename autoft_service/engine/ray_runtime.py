"""The Ray runtime the engine runs on: a cluster at ``RAY_ADDRESS`` or a private local one."""

from __future__ import annotations

import logging
import os

from autoft_service.errors import BackendUnavailable
from autoft_service.settings import Settings

log = logging.getLogger(__name__)


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
            _warn_if_auth_disabled()
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


def _warn_if_auth_disabled() -> None:
    """Keep Ray's token authentication for the local runtime (this service used to turn it off).

    Ray's gRPC servers (GCS, raylet, workers) listen on every interface whatever address the node
    advertises, so the runtime is private only because every call must carry a token: Ray's per-user
    token file (``~/.ray/auth_token``, created on first use) or ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``.
    With ``RAY_AUTH_MODE`` unset, Ray enables it itself for a new local runtime (setting the variable here
    would come too late: Ray reads it when imported). An explicit ``RAY_AUTH_MODE=disabled`` is honoured,
    loudly.
    """
    mode = os.environ.get("RAY_AUTH_MODE", "token")
    if mode.lower() != "token":
        log.warning(
            "RAY_AUTH_MODE=%s: the local Ray runtime accepts unauthenticated calls on every interface", mode
        )
