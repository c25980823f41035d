"""Activities: the job runner (execute, rollback, resolve) and the sample domain jobs."""

# This folder sits at the top of the repository but is installed and imported only as
# sternway.activities: a second copy under a top-level name would be a second set of classes, and a
# user's own `activities.py` must not meet it (docs/architecture.md, "One namespace").
if __name__ != "sternway.activities":
    raise ImportError(f"import sternway.activities, not {__name__}")

from sternway.activities._jobs import JobActivities, JobContext, RollbackContext

__all__ = ["JobActivities", "JobContext", "RollbackContext"]
