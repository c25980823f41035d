"""The machine a bench run ran on, and its results as JSON and as a markdown table."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench._harness import Result, Row


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def other_test_runs() -> int:
    """How many other test-suite processes (pytest) run on the machine right now."""
    mine = {os.getpid(), os.getppid()}
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "pytest" in cmdline and "test_bench_smoke" not in cmdline:
            count += 1
    return count


def load() -> dict[str, Any]:
    """Load averages and concurrent test suites, right now."""
    one, five, fifteen = os.getloadavg()
    return {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "other_pytest_processes": other_test_runs(),
    }


def machine() -> dict[str, Any]:
    from sternway.starter._dev import temporal_binary

    try:
        server = subprocess.run(
            [temporal_binary(), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        server = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(_memory_gib(), 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_cli": server,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    precise = unit in ("ms", "s") or abs(value) < 10
    text = f"{value:,.2f}" if precise else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _verdict(row: Row) -> str:
    if row.goal is None:
        return ""
    mark = "ok" if row.ok else "MISSED"
    return f"{row.goal} {mark}"


def markdown(report: dict[str, Any], results: list[Result]) -> str:
    m = report["machine"]
    lines = [
        f"Run {report['started']} to {report['finished']} · size `{report['size']}` · "
        f"command `{report['command']}`",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, {m['os']}, "
        f"Python {m['python']}, temporalio {m['temporalio']}, {m['temporal_cli']}.",
        "",
        "Load: "
        + "; ".join(
            f"{when} {entry['at']}: load average {', '.join(str(x) for x in entry['loadavg'])}, "
            f"{entry['other_pytest_processes']} other pytest processes"
            for when, entry in (("start", report["load_start"]), ("end", report["load_end"]))
        )
        + ".",
        "",
        *(f"**FAILED: {name}**: {error}" for name, error in report.get("failed", {}).items()),
        "",
        "| scenario | metric | measured | baseline | ratio | bar | notes |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for result in results:
        for row in result.rows:
            lines.append(
                f"| {row.scenario} | {row.metric} | {_fmt(row.value, row.unit)} | "
                f"{_fmt(row.baseline, row.unit)} | {row.ratio_text()} | "
                f"{_verdict(row)} | {row.note} |"
            )
    lines += ["", "Columns, per scenario (measured against baseline):", ""]
    for result in results:
        lines.append(
            f"- **{result.scenario}**: {result.title}. Measured: {result.measured}; baseline: "
            f"{result.baseline}. ({result.seconds:.0f} s)"
        )
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict[str, Any], results: list[Result]) -> tuple[Path, Path]:
    """``latest.json`` and ``latest.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = {**report, "results": [r.as_json() for r in results]}
    json_path, md_path = out / "latest.json", out / "latest.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown(report, results))
    return json_path, md_path
