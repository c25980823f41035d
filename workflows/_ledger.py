"""The status bookkeeping of a run: what ``sternway status`` shows and the run's result holds.

The interpreter (workflows/_workflow.py) decides what happens; the ledger records it: one
:class:`~workflows.models.JobStatus` per job instance in the order they appear, each attempt's
log, the order jobs started in (which rollback follows, newest first), the run's state and
progress, and the view the status query answers (undone groups shown as undone, secrets masked,
within the status budget). It makes no Temporal call and reads no clock of its own: the
interpreter hands it ``workflow.now`` and is told of every change, so it is tested without a
server (tests/test_interp_units.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sternway.workflows._view import undone_view
from sternway.workflows.models import (
    AttemptLog,
    AttemptReport,
    ErrorInfo,
    JobSpec,
    JobState,
    JobStatus,
    Progress,
    RunState,
    RunStatus,
    bounded_status,
    masked_status,
)

__all__ = ["DONE_STATES", "Ledger"]

DONE_STATES = frozenset({JobState.COMPLETED, JobState.SKIPPED})
"""Job states that no longer hold up the jobs after them."""


class Ledger:
    """The status of one run (or of one chunk of a parent run's ``each``).

    ``clock`` gives the time (``workflow.now`` in a workflow); ``changed`` is called when a job
    ends, so that whatever waits on the run's state looks again; ``continues_on_error`` tells
    whether a job instance fails without failing its scope (it then counts as done).
    """

    def __init__(
        self,
        status: RunStatus,
        *,
        clock: Callable[[], datetime],
        changed: Callable[[], None],
        continues_on_error: Callable[[str], bool],
    ) -> None:
        self.status = status
        self.jobs: dict[str, JobStatus] = {}
        # Names of the jobs that started, in order: rollback undoes them newest first.
        self.start_order: list[str] = []
        # Secret arg values: jobs get them, but the status (and so the result) never shows them.
        self.secrets: list[str] = []
        self._clock = clock
        self._changed = changed
        self._continues_on_error = continues_on_error

    # --------------------------------------------------------------------------------- entries

    def entry(self, name: str) -> JobStatus:
        """The status of job instance ``name``, added (PENDING) the first time it is asked."""
        job = self.jobs.get(name)
        if job is None:
            job = self.jobs[name] = JobStatus(name=name)
            self.status.jobs.append(job)
        return job

    def add_entries(self, prefix: str, specs: Iterable[JobSpec]) -> None:
        """Entries for a scope's jobs, so that pending jobs show too."""
        for spec in specs:
            self.entry(prefix + spec.name)

    def reuse(self, outputs: Mapping[str, Any]) -> None:
        """Jobs a retried run takes from the run it retries: COMPLETED, with their outputs."""
        for name, output in outputs.items():
            if name in self.jobs:
                self.jobs[name].state = JobState.COMPLETED
                self.jobs[name].output = output

    def reset(self, prefix: str) -> list[str]:
        """Make a group's jobs pending again for its next attempt; their names.

        Their logs and attempt counts go on, so every attempt keeps its own idempotency key.
        """
        names = [
            name
            for name in self.jobs
            if name == prefix or name.startswith((prefix + ".", prefix + "["))
        ]
        for name in names:
            job = self.jobs[name]
            job.state, job.error, job.output, job.detail = JobState.PENDING, None, None, None
            job.started_at = job.finished_at = None
            job.rollback = None
        return names

    # -------------------------------------------------------------------------------- attempts

    def begin(self, name: str, job: JobStatus, redelivery: bool = False) -> AttemptLog:
        """Mark an attempt as started (and the job, on its first attempt).

        A ``redelivery`` runs the current attempt again (its worker died under it): the job keeps
        its attempt count, and the log gets an entry of the same attempt number.
        """
        if not redelivery:
            job.attempts += 1
        job.state = JobState.RUNNING
        job.error = None
        now = self._clock()
        if job.started_at is None:
            job.started_at = now
            self.start_order.append(name)
        entry = AttemptLog(attempt=job.attempts, started_at=now)
        job.log.append(entry)
        return entry

    def log_attempt(
        self, entry: AttemptLog, report: AttemptReport, state: JobState, error: ErrorInfo | None
    ) -> None:
        """How an attempt ended, with what its activity reported."""
        entry.finished_at = self._clock()
        entry.state = state
        entry.exit_code = report.exit_code
        entry.stdout_tail = report.stdout_tail
        entry.stderr_tail = report.stderr_tail
        entry.error = error

    def end_job(self, job: JobStatus, state: JobState, error: ErrorInfo | None) -> None:
        """The job ended (for now: a retried group may make it pending again)."""
        job.state = state
        job.error = error
        job.finished_at = self._clock()
        self._changed()

    # ------------------------------------------------------------------------------- the run

    def set_state(self, state: RunState) -> bool:
        """Set the run's state; whether it changed (PENDING is set again on purpose)."""
        if state == self.status.state and state != RunState.PENDING:
            return False
        self.status.state = state
        return True

    def progress(self, jobs: Sequence[JobStatus] | None = None) -> Progress:
        """Jobs done (failed ones that continue on error count), in all and rolled back."""
        jobs = self.status.jobs if jobs is None else jobs
        done = sum(
            1
            for j in jobs
            if j.state in DONE_STATES
            or (j.state == JobState.FAILED and self._continues_on_error(j.name))
        )
        rolled_back = sum(1 for j in jobs if j.state == JobState.ROLLED_BACK)
        return Progress(done=done, total=len(jobs), rolled_back=rolled_back)

    def done(self, name: str, continue_on_error: bool) -> bool:
        """Whether job ``name`` no longer holds up the jobs after it."""
        job = self.jobs[name]
        return job.state in DONE_STATES or (job.state == JobState.FAILED and continue_on_error)

    def view(self) -> RunStatus:
        """What the status query answers: a copy with undone groups shown as undone, secret
        values masked wherever they show, within the status budget (so the answer, and the
        run's result, always fit a payload). The run's own state keeps the real values."""
        view = undone_view(self.status)
        view.progress = self.status.progress = self.progress(view.jobs)
        return bounded_status(masked_status(view, self.secrets))
