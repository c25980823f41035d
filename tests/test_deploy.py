"""docker-compose.yml and the Dockerfile, checked without Docker.

Docker cannot run on the machines the suite runs on, so the files are checked two ways:
their structure (services, pinned images, env wiring, healthchecks, the admin step's search
attributes against the names the code uses), and for real, as processes on this machine:
the image's ENTRYPOINT run as-is with the worker service's environment against a dev server
that starts after it, the admin step's script run with the ``temporal`` CLI, and the worker
service's healthcheck command.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from temporalio.envconfig import ClientConfig

from sternway.starter._dev import port_open
from sternway.workflows._protocol import SEARCH_ATTRIBUTE_REQUESTOR, SEARCH_ATTRIBUTE_STATE
from sternway.workflows.models import DEFAULT_TASK_QUEUE
from tests.cli import BIN, REPO, cli_env, sternway, temporal
from tests.helpers import free_port

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
WORKER = SERVICES["worker"]
ADMIN = SERVICES["temporal-admin"]


# ------------------------------------------------------------------------------- parsing


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as ``(KEYWORD, arguments)``, continuations joined."""
    lines: list[str] = []
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + raw.strip()
        else:
            lines.append(raw.strip())
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def instructions(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def image_command() -> list[str]:
    """What a container of the image runs: ENTRYPOINT then CMD (exec form)."""
    entrypoint = instructions("ENTRYPOINT")
    cmd = instructions("CMD")
    return [
        *(json.loads(entrypoint[-1]) if entrypoint else []),
        *(json.loads(cmd[-1]) if cmd else []),
    ]


def image_env() -> dict[str, str]:
    """The ENV the image sets (``ENV K=V ...`` form)."""
    env: dict[str, str] = {}
    for args in instructions("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(text: str, host: dict[str, str]) -> str:
    """Compose's interpolation: ``${VAR:-default}``, ``${VAR}``, ``$VAR`` and ``$$`` -> ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(3)
        return host.get(name) or match.group(2) or ""

    return _VARIABLE.sub(one, text)


def service_env(service: dict[str, Any], host: dict[str, str]) -> dict[str, str]:
    """The environment compose gives a service's container, for a host environment ``host``.

    A key without a value passes the host's value through, and is absent when the host has none.
    """
    declared = service.get("environment", {})
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) if "=" in item else (item, None) for item in declared)
    env: dict[str, str] = {}
    for key, value in declared.items():
        if value is None:
            if key in host:
                env[key] = host[key]
        else:
            env[key] = interpolate(str(value), host)
    return env


def shell_script(service: dict[str, Any]) -> str:
    """The ``/bin/sh -c`` script a one-shot service runs, with compose's ``$$`` undone."""
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    return interpolate(script, {})


# ------------------------------------------------------------------------ the compose file


def test_compose_has_the_services_in_order_with_healthchecks() -> None:
    assert set(SERVICES) == {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-admin",
        "temporal-ui",
        "worker",
    }
    needs = {
        "temporal-schema": {"postgresql": "service_healthy"},
        "temporal": {"temporal-schema": "service_completed_successfully"},
        "temporal-admin": {"temporal": "service_healthy"},
        "temporal-ui": {"temporal": "service_healthy"},
        "worker": {"temporal-admin": "service_completed_successfully"},
    }
    for name, wanted in needs.items():
        got = {dep: spec["condition"] for dep, spec in SERVICES[name]["depends_on"].items()}
        assert got == wanted, name
    # What others wait for on "healthy" has a healthcheck, and so has the worker.
    for name in ("postgresql", "temporal", "worker"):
        check = SERVICES[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 3, name
    for name in ("temporal-schema", "temporal-admin"):
        assert SERVICES[name]["restart"] == "no", name  # one-shot steps
    assert "postgres-data" in COMPOSE["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in SERVICES["postgresql"]["volumes"]


def test_every_image_is_pinned_to_a_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    pinned = re.compile(r"[a-z0-9./-]+:\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?")
    for name, service in SERVICES.items():
        image = service["image"]
        assert pinned.fullmatch(image) and "latest" not in image, f"{name}: {image}"
    # Server, schema tool and admin CLI come from one Temporal release.
    releases = {
        SERVICES[name]["image"].split(":")[1]
        for name in ("temporal-schema", "temporal", "temporal-admin")
    }
    assert len(releases) == 1
    assert SERVICES["temporal"]["image"].startswith("temporalio/server:")
    assert SERVICES["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert SERVICES["postgresql"]["image"].startswith("postgres:16.")
    assert WORKER["build"] == "." and WORKER["image"] == f"sternway-worker:{version}"


def test_the_worker_service_scales_and_is_wired_through_the_environment() -> None:
    # `--scale worker=N` needs no fixed container name and no host port.
    assert "container_name" not in WORKER and "ports" not in WORKER
    assert WORKER["init"] is True
    # Jobs of one run may run on different replicas: they share one data folder, which the
    # image creates for its unprivileged user (a new volume copies that owner).
    assert WORKER["volumes"] == ["worker-data:/var/lib/sternway/data"]
    assert "worker-data" in COMPOSE["volumes"]
    assert "install -d -o sternway -g sternway /var/lib/sternway/data" in " ".join(
        instructions("RUN")
    )
    env = service_env(WORKER, host={})
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["TEMPORAL_NAMESPACE"] == "default"
    assert env["STERNWAY_TASK_QUEUE"] == DEFAULT_TASK_QUEUE
    assert env["STERNWAY_ACTIONS_PATH"] == image_env()["STERNWAY_ACTIONS_PATH"]
    assert WORKER["expose"] == [env["STERNWAY_METRICS_PORT"]]
    assert float(env["STERNWAY_WAIT_FOR_SERVER"]) >= 60
    grace = int(env["STERNWAY_GRACE"].removesuffix("s"))
    assert int(WORKER["stop_grace_period"].removesuffix("s")) > grace  # no SIGKILL mid-grace
    # Set on the host, the values win; `sternway` and `temporal` read the same names.
    host = {
        "TEMPORAL_ADDRESS": "t.example:7233",
        "TEMPORAL_NAMESPACE": "ops",
        "STERNWAY_TASK_QUEUE": "q",
    }
    assert {k: service_env(WORKER, host)[k] for k in host} == host


def test_tls_and_api_key_settings_pass_through_only_when_set(tmp_path: Path) -> None:
    passed = [key for key, value in WORKER["environment"].items() if value is None]
    assert {"TEMPORAL_API_KEY", "TEMPORAL_TLS"} <= set(passed)
    assert all(key.startswith("TEMPORAL_") for key in passed)
    # Unset on the host, they are absent in the container: envconfig sees a plain connection
    # (an empty TEMPORAL_API_KEY would switch TLS on).
    assert not set(passed) & set(service_env(WORKER, host={}))
    pem = tmp_path / "x.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    for key in passed:
        value = str(pem) if key.endswith("_PATH") else "true" if key == "TEMPORAL_TLS" else "x"
        env = service_env(WORKER, host={key: value})
        assert env[key] == value
        # Each name is one Temporal's environment configuration really reads.
        config = ClientConfig.load_client_connect_config(override_env_vars={key: value})
        assert config.get("api_key") or config.get("tls"), key


def test_the_admin_step_registers_exactly_the_search_attributes_the_code_uses() -> None:
    script = shell_script(ADMIN)
    created = re.findall(r"search-attribute create .*?--name (\S+) --type (\S+)", script)
    assert dict(created) == {
        SEARCH_ATTRIBUTE_STATE: "Keyword",
        SEARCH_ATTRIBUTE_REQUESTOR: "Keyword",
    }
    assert len(created) == 2
    assert "operator namespace create" in script
    admin_env = service_env(ADMIN, host={})
    assert admin_env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert admin_env["TEMPORAL_NAMESPACE"] == service_env(WORKER, host={})["TEMPORAL_NAMESPACE"]
    # The same namespace follows a host override everywhere it is used.
    host = {"TEMPORAL_NAMESPACE": "ops"}
    for name in ("temporal-admin", "worker", "temporal-ui"):
        assert "ops" in service_env(SERVICES[name], host).values(), name


def test_the_schema_step_and_the_server_share_the_database_settings() -> None:
    script = shell_script(SERVICES["temporal-schema"])
    assert "setup temporal temporal" in script and "setup temporal_visibility visibility" in script
    assert "--plugin postgres12 --ep postgresql -p 5432 -u temporal" in script
    server = service_env(SERVICES["temporal"], host={})
    assert server["DB"] == "postgres12" and server["POSTGRES_SEEDS"] == "postgresql"
    assert server["POSTGRES_USER"] == "temporal" and server["BIND_ON_IP"] == "0.0.0.0"
    password = service_env(SERVICES["postgresql"], host={})["POSTGRES_PASSWORD"]
    assert server["POSTGRES_PWD"] == password
    assert service_env(SERVICES["temporal-schema"], host={})["SQL_PASSWORD"] == password


def test_the_web_ui_sits_where_the_cli_looks_for_it() -> None:
    ui = SERVICES["temporal-ui"]
    assert service_env(ui, host={})["TEMPORAL_ADDRESS"] == "temporal:7233"
    (frontend,) = SERVICES["temporal"]["ports"]
    (published,) = ui["ports"]
    host_port = int(frontend.split(":")[-2])
    ui_host_port = int(published.split(":")[-2])
    # `sternway` assumes a local server's UI at its port + 1000, as with `sternway dev`.
    assert (host_port, ui_host_port) == (7233, 8233)
    # Inside a worker container the server is not local: links need the UI's address.
    assert service_env(WORKER, host={})["STERNWAY_UI_URL"] == f"http://localhost:{ui_host_port}"
    assert frontend.startswith("127.0.0.1:") and published.startswith("127.0.0.1:")


# ---------------------------------------------------------------------------- the image


def test_the_dockerfile_builds_a_pinned_non_root_runtime_image() -> None:
    (base,) = instructions("FROM")
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", base), base
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    keywords = [kw for kw, _ in dockerfile()]
    # Everything after USER runs unprivileged, and no RUN comes after it.
    assert "RUN" not in keywords[keywords.index("USER") :]
    installs = [args for args in instructions("RUN") if "pip install" in args]
    # One install of the package alone (no extras: no test tools, no dev server), every
    # version pinned by constraints.txt.
    assert len(installs) == 1
    assert "pip install --constraint constraints.txt . " in installs[0] + " "
    assert "[" not in installs[0]
    assert image_command() == ["sternway", "worker"]
    env = image_env()
    assert instructions("EXPOSE") == [env["STERNWAY_METRICS_PORT"]]
    # The runbooks folder links to the installed package's own (package data, see
    # tests/test_wheel.py): the link's source, worked out here by sh from outside the clone as
    # in the image, holds the shipped runbooks.
    ln, flag, source, target = shlex.split(installs[0].split("&&")[-1])
    assert (ln, flag, target) == ("ln", "-s", env["STERNWAY_ACTIONS_PATH"])
    shell = subprocess.run(
        ["/bin/sh", "-c", f'echo "{source}"'],
        cwd="/", env=_base_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    folder = Path(shell.stdout.strip())
    assert folder.name == "actions" and folder.parent.name == "sternway", shell.stdout
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(
        p.name for p in (REPO / "actions").glob("*.yaml")
    )


def test_the_constraints_file_pins_every_runtime_dependency_within_its_range() -> None:
    assert "constraints.txt" in " ".join(instructions("COPY")).split()
    pins: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(pinned), f"{requirement} excludes {pinned}"
    # Only the runtime closure: nothing of the extras (the dev server, the test tools).
    extras = {
        canonicalize_name(Requirement(text).name)
        for group in project["optional-dependencies"].values()
        for text in group
    }
    assert not extras & set(pins), extras & set(pins)


def test_the_image_gets_every_package_and_no_local_state() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = " ".join(instructions("COPY"))
    # sternway/ links to the folders at the top (docs/architecture.md): each link's target is
    # copied too, or the image's `pip install .` would follow a dangling link.
    linked = [p.name for p in (REPO / "sternway").iterdir() if p.is_symlink()]
    assert linked, "sternway/ holds no links: update this test to the layout"
    for name in [*packages, *project["tool"]["setuptools"].get("py-modules", []), *linked]:
        assert re.search(rf"(^| ){re.escape(name)}( |$)", copied), name
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".sternway", "tests"} <= set(ignored)
    for source in (args.split()[:-1] for args in instructions("COPY")):
        for path in source:
            assert (REPO / path).exists() and path not in ignored, path


# -------------------------------------------------------------------- for real, as processes


def _container_path(path: str) -> str:
    """Where the image's files are in this checkout (the image installs them from it)."""
    return str(REPO / "actions") if path == image_env()["STERNWAY_ACTIONS_PATH"] else path


def _base_env() -> dict[str, str]:
    """This machine's environment without Temporal or Sternway settings, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "STERNWAY_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


async def _start_dev_server(port: int, db: Path) -> asyncio.subprocess.Process:
    """A bare dev server: no search attributes, so the admin step must register them."""
    server = await asyncio.create_subprocess_exec(
        str(BIN / "temporal"), "server", "start-dev", "--headless", "--port", str(port),
        "--db-filename", str(db), "--log-level", "error",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    deadline = asyncio.get_running_loop().time() + 60
    while not port_open("127.0.0.1", port):
        assert server.returncode is None, "the dev server exited"
        assert asyncio.get_running_loop().time() < deadline, "the dev server did not start"
        await asyncio.sleep(0.1)
    return server


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


async def _admin_step(address: str, **host: str) -> tuple[int, str]:
    """Run the compose admin step's script with ``sh``, as its container would."""
    env = {**_base_env(), **service_env(ADMIN, host), "TEMPORAL_ADDRESS": address}
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", shell_script(ADMIN), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


def _read(path: Path) -> str:
    return path.read_text()


async def _until_logged(process: asyncio.subprocess.Process, log: Path, text: str) -> None:
    """Wait until a running ``process`` has written ``text`` to ``log`` (it may start slowly)."""
    deadline = asyncio.get_running_loop().time() + 60
    while text not in _read(log):
        assert process.returncode is None, _read(log)
        assert asyncio.get_running_loop().time() < deadline, _read(log)
        await asyncio.sleep(0.2)


async def _healthcheck(env: dict[str, str]) -> int:
    """Run the worker service's healthcheck command in the worker's environment."""
    test = WORKER["healthcheck"]["test"]
    assert test[0] == "CMD"
    proc = await asyncio.create_subprocess_exec(
        *test[1:], env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), 30)


async def test_the_image_entrypoint_waits_for_the_server_runs_a_run_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    port, metrics = free_port(), free_port()
    address = f"localhost:{port}"
    # The container's environment: the image's ENV, then the worker service's. Only what
    # points outside this machine's sandbox changes: the server's address, the metrics port
    # (other test runs share this machine) and the runbook folder's path inside the image.
    env = {**_base_env(), **image_env(), **service_env(WORKER, host={})}
    env.update(
        TEMPORAL_ADDRESS=address,
        STERNWAY_METRICS_PORT=str(metrics),
        STERNWAY_ACTIONS_PATH=_container_path(env["STERNWAY_ACTIONS_PATH"]),
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        worker = await asyncio.create_subprocess_exec(
            *image_command(), env=env, cwd=tmp_path, stdout=stderr, stderr=stderr
        )
    server = None
    try:
        # As under `docker compose up`, the worker comes up before its server: it waits.
        await _until_logged(worker, log, "waiting for Temporal")
        assert await _healthcheck(env) != 0  # not healthy before it polls

        server = await _start_dev_server(port, tmp_path / "temporal.db")
        code, out = await _admin_step(address)
        assert code == 0, out
        assert "namespace default is ready for Sternway" in out

        deadline = asyncio.get_running_loop().time() + 60
        while await _healthcheck(env) != 0:
            assert worker.returncode is None, log.read_text()
            assert asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.5)

        cli = cli_env(address, env["STERNWAY_TASK_QUEUE"])
        site = tmp_path / "site"
        submitted = await sternway(
            cli, "submit", "deploy-site", "--arg", f"root={site}", "--arg", "release=v1",
            "--requestor", "compose", "--wait", "--json", timeout=90,
        )  # fmt: skip
        assert submitted.code == 0, submitted.out + submitted.err + log.read_text()
        run = submitted.json()
        assert run["state"] == "COMPLETED"
        assert (site / "current").resolve() == (site / "releases" / "v1").resolve()
        # The search attributes the admin step registered hold the run's state and requestor.
        listed = await sternway(
            cli, "list", "--state", "completed", "--requestor", "compose", "--json"
        )
        assert [r["run_id"] for r in listed.json()["runs"]] == [run["run_id"]], listed.err
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 45)  # the compose file's stop_grace_period
        if server is not None:
            await _stop(server)
    text = log.read_text()
    assert worker.returncode == 0, text
    assert '"worker stopped"' in text and "Traceback" not in text


async def test_the_admin_step_creates_a_namespace_a_waiting_worker_then_serves(
    tmp_path: Path,
) -> None:
    port = free_port()
    address = f"localhost:{port}"
    server = await _start_dev_server(port, tmp_path / "temporal.db")
    log = tmp_path / "worker.log"
    env = cli_env(address, "ops-queue", TEMPORAL_NAMESPACE="sternway-ops")
    with log.open("wb") as out:
        worker = await asyncio.create_subprocess_exec(
            str(BIN / "sternway"), "worker", "--wait-for-server", "60",
            env=env, cwd=REPO, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        # The server answers, but the namespace is not there yet: the worker waits for it.
        await _until_logged(worker, log, "namespace not ready")

        for _ in range(2):  # the second run finds everything in place and succeeds as well
            code, said = await _admin_step(address, TEMPORAL_NAMESPACE="sternway-ops")
            assert code == 0, said
        described = await temporal(
            address, "operator", "namespace", "describe", "-n", "sternway-ops", "-o", "json"
        )
        assert described.code == 0, described.err
        retention = json.loads(described.out)["config"]["workflowExecutionRetentionTtl"]
        assert retention == f"{30 * 86400}s"
        listed = await temporal(
            address, "operator", "search-attribute", "list", "-n", "sternway-ops", "-o", "json"
        )
        assert listed.code == 0, listed.err
        custom = json.loads(listed.out)["customAttributes"]
        assert custom[SEARCH_ATTRIBUTE_STATE] == custom[SEARCH_ATTRIBUTE_REQUESTOR]
        assert custom[SEARCH_ATTRIBUTE_STATE] in ("INDEXED_VALUE_TYPE_KEYWORD", "Keyword")

        await _until_logged(worker, log, '"worker started"')
        assert '"namespace": "sternway-ops"' in log.read_text()
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 45)
        await _stop(server)
    assert worker.returncode == 0, log.read_text()


async def test_the_worker_gives_up_waiting_with_a_clear_error() -> None:
    env = cli_env(f"localhost:{free_port()}", "unused")
    result = await sternway(env, "worker", "--wait-for-server", "1", timeout=30)
    assert result.code == 4, result.err
    assert "waiting for Temporal" in result.err
    last = result.err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: cannot reach Temporal at localhost:\d+: connection refused \(waited 1s\)", last
    )
