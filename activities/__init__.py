"""Activities: the job runner (execute, rollback, resolve) and the sample domain jobs."""

from activities._jobs import JobActivities, JobContext, RollbackContext

__all__ = ["JobActivities", "JobContext", "RollbackContext"]
