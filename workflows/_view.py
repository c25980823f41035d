"""How a run's status is shown: groups and ``each`` jobs whose work was undone say so.

A group or ``each`` job ends COMPLETED when its jobs complete; if the run then rolls back, its
jobs become ROLLED_BACK but the group itself has nothing to undo and would still read
``COMPLETED 2/2 items completed``. The status the run answers shows such a group as its jobs
are: ROLLING_BACK, ROLLED_BACK or ROLLBACK_FAILED. This is a view, computed for each answer: the
run's own state (which its logic reads) is never changed by it.
"""

from __future__ import annotations

from sternway.workflows.models import JobState, JobStatus, RunStatus

__all__ = ["undone_view"]

_UNDONE = (JobState.ROLLBACK_FAILED, JobState.ROLLING_BACK, JobState.ROLLED_BACK)
_NOTES = {
    JobState.ROLLBACK_FAILED: "a rollback failed",
    JobState.ROLLING_BACK: "rolling back",
    JobState.ROLLED_BACK: "rolled back",
}


def _ancestors(name: str, names: set[str]) -> list[str]:
    """The groups and ``each`` jobs ``name`` is part of (``g`` and ``g[a]`` of ``g[a].job``)."""
    return [name[:i] for i, c in enumerate(name) if c in "[." and name[:i] in names]


def undone_view(status: RunStatus) -> RunStatus:
    """``status``, with each COMPLETED group or ``each`` job whose jobs were undone shown so.

    The group takes the most pressing state among its jobs: ROLLBACK_FAILED, then ROLLING_BACK,
    then ROLLED_BACK; its detail gets the same note. ``status`` itself is not changed: a shallow
    copy holds copies of the jobs that change.
    """
    names = {job.name for job in status.jobs}
    worst: dict[str, int] = {}
    for job in status.jobs:
        if job.state in _UNDONE:
            rank = _UNDONE.index(job.state)
            for ancestor in _ancestors(job.name, names):
                worst[ancestor] = min(worst.get(ancestor, rank), rank)
    if not worst:
        return status
    jobs: list[JobStatus] = []
    for job in status.jobs:
        found = worst.get(job.name)
        if found is not None and job.state == JobState.COMPLETED:
            state = _UNDONE[found]
            detail = f"{job.detail}; {_NOTES[state]}" if job.detail else _NOTES[state]
            job = job.model_copy(update={"state": state, "detail": detail})
        jobs.append(job)
    return status.model_copy(update={"jobs": jobs})
