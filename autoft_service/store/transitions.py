"""The one table of legal job state transitions. Every state change in the store goes through ``transition``.

Rows are actions, columns the state a job is in, values the state it moves to; a missing cell is illegal and
raises :class:`~autoft_service.errors.JobStateConflict` (HTTP 409) naming the states the action allows.
"""

from __future__ import annotations

from typing import Final

from autoft_service.errors import JobStateConflict

TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    # A runner claims (or re-claims after a crash) a job; mark_running is idempotent for the owner.
    "start": {"queued": "running", "running": "running"},
    "succeed": {"running": "succeeded"},
    "fail": {"queued": "failed", "running": "failed"},
    # Cancelling a queued job is immediate; a running job is only flagged (see "request_cancel").
    "cancel": {"queued": "cancelled", "running": "cancelled"},
    "request_cancel": {"queued": "cancelled", "running": "running"},
    # More trials: a succeeded job is searched again; a live job just gets a bigger budget.
    "extend": {"queued": "queued", "running": "running", "succeeded": "queued"},
    # Retry a failed / pruned trial: a finished job goes back to the queue.
    "retry": {"queued": "queued", "running": "running", "succeeded": "queued", "failed": "queued"},
}


def transition(action: str, state: str, *, job_id: str | None = None) -> str:
    """The state a job in ``state`` moves to under ``action``; raise ``JobStateConflict`` if illegal."""
    try:
        return TRANSITIONS[action][state]
    except KeyError:
        allowed = ", ".join(TRANSITIONS[action]) if action in TRANSITIONS else "(none)"
        who = f"job {job_id}" if job_id else "the job"
        raise JobStateConflict(
            f"cannot {action.replace('_', ' ')} {who}: it is {state} (allowed from: {allowed})",
            field="state",
            details={"state": state, "action": action, "allowed_from": list(TRANSITIONS.get(action, {}))},
        ) from None


#: Trial states that may not change any more (a late "running" report must not undo a result).
FROZEN_TRIAL_STATES: Final = frozenset({"completed", "pruned"})


def trial_transition(current: str, new: str, *, job_id: str, number: int) -> str:
    """Check a trial state change: completed and pruned trials are final; anything else may move."""
    if current in FROZEN_TRIAL_STATES and new != current:
        raise JobStateConflict(
            f"trial {number} of job {job_id} is {current}; it cannot become {new}",
            field="state",
            details={"state": current, "requested": new},
        )
    return new
