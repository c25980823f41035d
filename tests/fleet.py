"""An action for the scale-out test, loaded by worker processes through ``STERNWAY_MODULES``.

Each job says which worker process ran it: its output carries the worker's pid, and when
``STERNWAY_FLEET_LOG`` names a file, it appends ``<pid> <run id> <job>`` to it as it finishes,
so the test can tell, while the runs go on, how far each worker has got.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

from sternway.activities import JobContext
from sternway.workflows._actions import Action, Job


def work(ctx: JobContext) -> dict[str, Any]:
    """Hold a slot for 0.2-0.5 s (varied, so that workers drift out of step), then report.

    A sync job: the worker runs it in a thread, so the file append blocks nothing.
    """
    seconds = 0.2 + (zlib.crc32(f"{ctx.run_id}/{ctx.job}".encode()) % 4) * 0.1
    time.sleep(seconds)
    log = os.environ.get("STERNWAY_FLEET_LOG")
    if log:
        # One short append per line: lines from several processes do not interleave.
        with open(log, "a") as out:
            out.write(f"{os.getpid()} {ctx.run_id} {ctx.job}\n")
    return {"pid": os.getpid(), "job": ctx.job, "attempt": ctx.attempt}


def _job(name: str, after: list[str] | None = None) -> Job:
    # A short heartbeat timeout: an attempt on a worker that was killed is noticed in 2 s and
    # re-run elsewhere (the engine does not count it against the retry policy).
    return Job(name, execute=work, after=after or [], heartbeat_timeout="2s", timeout="30s")


ACTIONS = [
    Action(
        "test-fleet",
        [_job("fetch"), _job("apply", ["fetch"]), _job("verify", ["apply"])],
        description="Three short jobs in a row that name the worker that ran them",
    )
]
