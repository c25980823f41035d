"""What a shell job takes from its worker's host and what it leaves there.

The environment: a shell job starts from a clean environment, never from the worker's own (which
holds Sternway's and Temporal's credentials). It gets :data:`BASE_ENV` (those the worker has), the
names the operator allows with ``sternway worker --shell-env`` or ``STERNWAY_SHELL_ENV``, and what
the job's ``env`` sets. Names starting with ``STERNWAY_`` or ``TEMPORAL_`` never pass from the
worker: allowing one is refused when the worker starts.

Process groups: each shell job runs in a process group of its own, whose id is recorded in a file
under :func:`state_dir` named after the attempt's idempotency key. The file is removed when the
job's process ends. If the worker dies first (``kill -9``, OOM), the file stays, and when the same
attempt is delivered again on this host the group it names is killed before the new process
starts, so that a re-delivery never runs beside a survivor of the lost delivery. The direct child
dies with the worker anyway (``PR_SET_PDEATHSIG``, see :func:`dying_with_worker`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "BASE_ENV",
    "ENV_ALLOWLIST_VAR",
    "configure_shell_env",
    "dying_with_worker",
    "forget_group",
    "host_secrets",
    "job_environment",
    "kill_recorded_group",
    "parse_allowlist",
    "record_group",
    "state_dir",
]

BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
"""Variables a shell job gets from the worker's environment whenever the worker has them."""
ENV_ALLOWLIST_VAR = "STERNWAY_SHELL_ENV"
"""The worker's variable naming more variables shell jobs get (comma-separated)."""
_OWN_PREFIXES = ("STERNWAY_", "TEMPORAL_")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$|^\*$")

_allowlist: tuple[str, ...] | None = None


def _own(name: str) -> bool:
    """Whether ``name`` is one of Sternway's or Temporal's own settings (credentials among them)."""
    return name.upper().startswith(_OWN_PREFIXES)


def parse_allowlist(entries: Iterable[str]) -> tuple[str, ...]:
    """Names (or ``PREFIX*`` patterns) from entries that may each hold a comma-separated list.

    Raises ValueError when an entry names one of Sternway's or Temporal's own variables.
    """
    names: list[str] = []
    for entry in entries:
        for raw in entry.split(","):
            name = raw.strip()
            if not name:
                continue
            if not _NAME.match(name):
                raise ValueError(
                    f"shell environment: {name!r} is not a variable name (or a PREFIX* pattern)"
                )
            if _own(name.rstrip("*")):
                raise ValueError(
                    f"shell environment: {name!r} is refused: STERNWAY_* and TEMPORAL_* variables "
                    "hold the worker's own settings and credentials and never reach shell jobs "
                    "(give a job what it needs in its env)"
                )
            names.append(name)
    return tuple(dict.fromkeys(names))


def configure_shell_env(names: Iterable[str] | None = None) -> tuple[str, ...]:
    """Set the allowlist of this worker process: ``names`` plus ``STERNWAY_SHELL_ENV``.

    Raises ValueError (a clear one-line message) when a name is refused.
    """
    global _allowlist
    _allowlist = parse_allowlist([*(names or ()), os.environ.get(ENV_ALLOWLIST_VAR, "")])
    return _allowlist


def job_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a shell job: the base names, the allowlist, then the job's ``env``."""
    allowed = _allowlist if _allowlist is not None else configure_shell_env()
    env: dict[str, str] = {}
    for name, value in os.environ.items():
        if _own(name):
            continue
        if name in BASE_ENV or any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
            env[name] = value
    env.update(extra)
    return env


_CREDENTIALS = ("STERNWAY_CODEC_KEYS", "TEMPORAL_API_KEY", "TEMPORAL_TLS_CLIENT_KEY_DATA")
_KEY_FILES = ("STERNWAY_CODEC_KEY_FILE",)
_SHORTEST = 8


def _key_parts(text: str) -> Iterable[str]:
    """The key of each ``id:key`` entry of a codec key list (comma- or line-separated)."""
    for line in text.splitlines():
        for entry in line.split("#", 1)[0].split(","):
            key = entry.partition(":")[2].strip()
            if len(key) >= _SHORTEST:
                yield key


def host_secrets() -> list[str]:
    """The worker's credentials, as text a job could print if it found them some other way (a
    file it can read): shell output is masked with these. Longest first."""
    found: set[str] = set()
    for name in _CREDENTIALS:
        value = os.environ.get(name, "").strip()
        if len(value) >= _SHORTEST:
            found.add(value)
            found.update(_key_parts(value) if name == "STERNWAY_CODEC_KEYS" else ())
            # PEM data: each base64 line of the key alone (a job may print it line by line).
            found.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 16)
    for name in _KEY_FILES:
        file = os.environ.get(name, "").strip()
        if file:
            with contextlib.suppress(OSError, ValueError):
                found.update(_key_parts(Path(file).read_text()))
    return sorted(found, key=lambda text: (-len(text), text))


# ------------------------------------------------------------------------- process groups


_SETPRIV = shutil.which("setpriv")


def dying_with_worker(argv: list[str], path: str | None) -> list[str]:
    """``argv`` run so that Linux SIGKILLs it when the worker dies: through util-linux's
    ``setpriv --pdeathsig KILL``, which sets ``PR_SET_PDEATHSIG`` and then execs the program (the
    setting survives exec).

    Not a ``preexec_fn``: code run between fork and exec in a process with threads (the worker
    has many) can deadlock on a lock another thread held at fork time, and a shell job's fork once
    froze a whole worker that way. The "parent" of PR_SET_PDEATHSIG is the *thread* that forked:
    shell jobs are spawned on the worker's event loop thread, which lives as long as the worker.
    Without ``setpriv`` on the host, or for a program that cannot be found (so that its start
    fails as it always did, with the program named), ``argv`` is returned as it is.
    """
    program = argv[0]
    found = shutil.which(program, path=path) if "/" not in program else program
    if _SETPRIV is None or found is None or not os.access(found, os.X_OK):
        return argv
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def state_dir() -> Path | None:
    """Where this host's workers record the process groups of running shell jobs (per user).

    None when it cannot be made or is not this user's own private folder (another user could
    otherwise plant a record that makes a worker kill a process group of its choice).
    """
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    path = base / f"sternway-{os.getuid()}" / "shell-groups"
    try:
        base.mkdir(parents=True, exist_ok=True)
        for folder in (path.parent, path):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
            info = os.lstat(folder)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                return None
            if info.st_mode & 0o077:  # ours, made with a wider umask or mode: make it private
                os.chmod(folder, 0o700)
    except OSError:
        return None
    return path


def _record_path(key: str) -> Path | None:
    folder = state_dir()
    if folder is None:
        return None
    return folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _start_time(pid: int) -> str | None:
    """The start time of ``pid`` (field 22 of /proc/<pid>/stat), to tell a reused pid apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def record_group(key: str, pgid: int) -> None:
    """Record that the attempt ``key`` runs in process group ``pgid`` on this host."""
    path = _record_path(key)
    if path is None:
        return
    record = {"key": key, "pgid": pgid, "start": _start_time(pgid), "worker": os.getpid()}
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(record))


def forget_group(key: str) -> None:
    """The attempt's process ended (or was killed): its record is no longer needed."""
    path = _record_path(key)
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def kill_recorded_group(key: str) -> int | None:
    """SIGKILL the process group an earlier delivery of attempt ``key`` left on this host.

    Returns the group id killed, or None. The group is only killed if its leader is gone (its pid
    number then stays taken by the group, so it cannot name another group) or is still the same
    process (same start time).
    """
    path = _record_path(key)
    if path is None:
        return None
    try:
        record = json.loads(path.read_text())
        pgid = int(record["pgid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    killed: int | None = None
    if record.get("key") == key and pgid > 1:
        start = _start_time(pgid)
        if start is None or start == record.get("start"):
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed = pgid
            except (ProcessLookupError, PermissionError):
                pass
    forget_group(key)
    return killed
