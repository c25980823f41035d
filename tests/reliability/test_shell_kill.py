"""Worker ``kill -9`` during a long shell job: no process of the lost delivery survives it, and the
attempt, delivered again, starts its command once.

The job's shell runs a grandchild (``sleep``) in its process group. ``PR_SET_PDEATHSIG`` kills the
shell the moment its worker dies; the grandchild is killed by the next worker on this host before
it starts the same attempt again (the process group is recorded under the attempt's key).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from sternway import submit
from sternway.workflows.models import RunStatus
from tests.reliability.conftest import Server
from tests.reliability.helpers import WorkerProcess, until

# Each start appends "start <pid> survivors:<pids of earlier starts still running>" to $1/starts,
# writes "<shell pid> <grandchild pid>" to $1/pids.<n>, and waits for the grandchild: 60 s the
# first time (the worker is killed meanwhile), 1 s after.
RUNBOOK = """\
name: rel-shell-long
description: a long shell job with a grandchild process
args:
  required:
    - {name: dir, type: str}
jobs:
  - name: long
    run: shell
    timeout: 2m
    heartbeat_timeout: 2s
    with:
      shell: true
      args: ["${{ args.dir }}"]
      script: |
        d="$1"
        survivors=""
        for f in "$d"/pids.*; do
          [ -e "$f" ] || continue
          for p in $(cat "$f"); do
            state=$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)
            if [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]; then
              survivors="$survivors $p"
            fi
          done
        done
        echo "start $$ survivors:$survivors" >> "$d/starts"
        n=$(wc -l < "$d/starts")
        if [ "$n" -eq 1 ]; then seconds=60; else seconds=1; fi
        sleep "$seconds" &
        echo "$$ $!" > "$d/pids.$n"
        wait
"""


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which this container's init may never reap, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


@pytest.mark.timeout(180)
async def test_kill_9_during_a_shell_job_leaves_no_survivor_and_the_attempt_runs_once(
    rel_server: Server, tmp_path: Path
) -> None:
    queue = f"rel-shell-{uuid.uuid4().hex[:8]}"
    actions = tmp_path / "actions"
    actions.mkdir()
    (actions / "long.yaml").write_text(RUNBOOK)
    work = tmp_path / "work"
    work.mkdir()
    starts = work / "starts"

    first = await WorkerProcess.start(
        rel_server.address, queue, tmp_path / "worker-1.log", str(actions)
    )
    handle = await submit(rel_server.client, "rel-shell-long", {"dir": str(work)}, task_queue=queue)

    async def started(n: int) -> list[int] | None:
        pids = work / f"pids.{n}"
        text = pids.read_text() if pids.exists() else ""
        return [int(p) for p in text.split()] if text.endswith("\n") else None

    old = await until(lambda: started(1), "the first start", 60)
    assert all(running(pid) for pid in old)
    await first.kill9()
    shell, grandchild = old

    async def shell_gone() -> bool | None:
        return True if not running(shell) else None

    # The shell dies with its worker (PR_SET_PDEATHSIG); its grandchild is still there until a
    # worker on this host gets the attempt again.
    await until(shell_gone, "the shell of the lost delivery to die with its worker", 10)
    assert running(grandchild)
    second = await WorkerProcess.start(
        rel_server.address, queue, tmp_path / "worker-2.log", str(actions)
    )

    async def final() -> RunStatus | None:
        status = await handle.status()
        return status if status.finished_at is not None else None

    try:
        status = await until(final, "the run to end", 90, every=0.5)
    finally:
        assert await second.stop() == 0

    assert status.state == "COMPLETED", status.model_dump_json()
    job = status.job("long")
    # One attempt, delivered twice: lost with the first worker, then completed.
    assert job.attempts == 1 and [e.attempt for e in job.log] == [1] * len(job.log)
    assert job.log[0].error is not None and job.log[0].error.message == "heartbeat timeout"
    assert job.log[-1].state == "COMPLETED"
    lines = starts.read_text().splitlines()
    # The command started once per delivery, and the second start saw nothing of the first.
    assert len(lines) == 2, lines
    assert all(line.endswith("survivors:") for line in lines), lines
    assert not [pid for pid in old if running(pid)]
    assert (
        "killed the process group an earlier delivery of this attempt left"
        in (tmp_path / "worker-2.log").read_text()
    )
