"""The sample action ``deploy-site``: publish a static site release on this machine.

Real local work, undone for real on failure::

    <root>/releases/<release>/index.html   built by ``build``   (rollback: remove it)
    <root>/current -> releases/<release>    switched by ``switch`` (rollback: point it back)
    health check of <root>/current          by ``check``, retried (no rollback: it changes nothing)
    <root>/deployments.log                  a line by ``record`` (rollback: remove the line)

A release built with ``broken=True`` lacks its release marker, so its health check fails and the
run rolls back to the previous release.
"""

from __future__ import annotations

import html
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from sternway.activities._context import JobContext, RollbackContext
from sternway.workflows._actions import Action, Job, Retry, job_function
from sternway.workflows._protocol import ErrorType
from sternway.workflows.errors import JobError

__all__ = ["DeploySiteArgs", "deploy_site"]

_F = TypeVar("_F", bound=Callable[..., Any])

MARKER = '<meta name="sternway-release" content="{release}">'


# An absolute path with no ".." part (each part is anything but ".."), and a plain name that
# cannot climb out of releases/. pydantic's default regex engine searches: hence ^ and $.
ROOT_PATTERN = r"^(?:/(?:\.?[^/.][^/]*|\.\.[^/]+|\.)?)+$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class DeploySiteArgs(BaseModel):
    """Args of ``deploy-site``."""

    root: str = Field(
        pattern=ROOT_PATTERN,
        description="directory that holds releases/ and the current symlink (absolute)",
    )
    release: str = Field(pattern=NAME_PATTERN, description="release name")
    message: str = Field(default="Hello from Sternway", description="text of the page")
    broken: bool = Field(default=False, description="publish a page that fails its health check")
    pause: float = Field(default=0.0, ge=0, le=60, description="seconds each step lingers")


def _site_job(fn: _F) -> _F:
    """Id ``site.<name>``; histories of the first layout recorded ``activities.site.<name>``, and
    those of the one namespace before ids ``sternway.activities.site.<name>``."""
    name = fn.__name__
    return job_function(
        f"site.{name}", aliases=(f"activities.site.{name}", f"sternway.activities.site.{name}")
    )(fn)


def _root(ctx: JobContext | RollbackContext) -> Path:
    args: DeploySiteArgs = ctx.args
    return Path(args.root)


@_site_job
def build(ctx: JobContext) -> dict[str, Any]:
    """Render the release into ``releases/<release>``."""
    args: DeploySiteArgs = ctx.args
    target = _root(ctx) / "releases" / args.release
    # Saved before touching anything, so a build that dies half-way is still cleaned up; a
    # later attempt keeps what the first one saw.
    if ctx.rollback_data is None:
        ctx.save_rollback_data({"path": str(target), "existed": target.exists()})
    target.mkdir(parents=True, exist_ok=True)
    ctx.report(f"rendering {target}")
    time.sleep(args.pause)
    marker = "" if args.broken else MARKER.format(release=html.escape(args.release))
    body = f"<h1>{html.escape(args.message)}</h1>"
    page = f"<!doctype html><html><head>{marker}</head><body>{body}</body></html>\n"
    (target / "index.html").write_text(page)
    return {"path": str(target), "bytes": len(page)}


@_site_job
def remove_build(ctx: RollbackContext) -> None:
    """Remove the release directory, unless it was there before the run."""
    data = ctx.rollback_data or {}
    if data.get("path") and not data.get("existed"):
        shutil.rmtree(_release_in(_root(ctx) / "releases", data["path"]), ignore_errors=True)


def _release_in(releases: Path, path: str) -> Path:
    """``path`` with symlinks resolved, if it is an entry of ``releases``: whatever the args or
    the rollback data say, a rollback never deletes anything else (and is not retried)."""
    real, folder = Path(os.path.realpath(path)), Path(os.path.realpath(releases))
    if real.parent != folder:
        raise JobError(
            f"refusing to remove {real}: it is not a release in {folder}",
            type=ErrorType.OUTSIDE_ROOT,
            non_retryable=True,
        )
    return real


@_site_job
def switch(ctx: JobContext) -> dict[str, Any]:
    """Point ``current`` at the new release, atomically."""
    args: DeploySiteArgs = ctx.args
    current = _root(ctx) / "current"
    previous = os.readlink(current) if current.is_symlink() else None
    ctx.save_rollback_data({"previous": previous})
    _point(current, os.path.join("releases", args.release))
    time.sleep(args.pause)
    return {"current": os.readlink(current), "previous": previous}


@_site_job
def restore_link(ctx: RollbackContext) -> None:
    """Point ``current`` back where it was (or remove it if there was none)."""
    current = _root(ctx) / "current"
    data = ctx.rollback_data
    if not data:
        return
    if data["previous"] is None:
        current.unlink(missing_ok=True)
    else:
        _point(current, data["previous"])


def _point(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


@_site_job
def health_check(ctx: JobContext) -> dict[str, Any]:
    """The live page must carry the release's marker."""
    args: DeploySiteArgs = ctx.args
    page_path = _root(ctx) / "current" / "index.html"
    ctx.report(f"checking {page_path} (attempt {ctx.attempt})")
    time.sleep(args.pause)
    page = page_path.read_text() if page_path.exists() else ""
    if MARKER.format(release=html.escape(args.release)) not in page:
        raise JobError(
            f"release {args.release!r} is not healthy: its page lacks the release marker"
        )
    return {"healthy": True, "checked": str(page_path)}


@_site_job
def record(ctx: JobContext) -> dict[str, Any]:
    """Append the deployment to ``deployments.log``; the idempotency key makes re-runs harmless."""
    args: DeploySiteArgs = ctx.args
    log = _root(ctx) / "deployments.log"
    line = f"{args.release} deployed by {ctx.run_id} [{ctx.idempotency_key}]\n"
    existing = log.read_text() if log.exists() else ""
    if line not in existing:
        with log.open("a") as f:
            f.write(line)
    ctx.save_rollback_data({"line": line})
    return {"log": str(log), "line": line.strip()}


@_site_job
def unrecord(ctx: RollbackContext) -> None:
    """Remove the deployment's line from ``deployments.log``."""
    log = _root(ctx) / "deployments.log"
    data = ctx.rollback_data
    if data and log.exists():
        log.write_text("".join(x for x in log.read_text().splitlines(True) if x != data["line"]))


deploy_site = Action(
    "deploy-site",
    args=DeploySiteArgs,
    description="Publish a static site release and switch to it, rolling back if it is unhealthy",
    jobs=[
        Job("build", execute=build, rollback=remove_build, retry=Retry(max_attempts=2)),
        Job("switch", execute=switch, rollback=restore_link, after=["build"]),
        Job(
            "check",
            execute=health_check,
            after=["switch"],
            retry=Retry(max_attempts=3, initial_interval="1s", backoff=1.0),
        ),
        Job("record", execute=record, rollback=unrecord, after=["check"]),
    ],
)
