"""Every benchmark scenario runs end to end at size tiny, so the bench code cannot rot.

One ``python -m bench --size tiny`` run (its own dev servers and workers, as ``make bench``
starts them) for the whole module; only the structure of its results is checked. No figure is
asserted: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bench.__main__ import scenarios
from tests.cli import REPO

SCENARIOS = list(scenarios())


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads((out / "latest.json").read_text())
    data["markdown"] = (out / "latest.md").read_text()
    return data


@pytest.mark.timeout(270)
def test_every_scenario_ran_with_machine_and_load(report: dict[str, Any]) -> None:
    assert report["size"] == "tiny"
    assert report["machine"]["nproc"] >= 1 and report["machine"]["cpu"]
    assert len(report["load_start"]["loadavg"]) == 3 and len(report["load_end"]["loadavg"]) == 3
    assert [r["scenario"] for r in report["results"]] == SCENARIOS
    for scenario in SCENARIOS:
        assert f"**{scenario}**" in report["markdown"]
        assert f"\n| {scenario} | " in report["markdown"]


FIGURES_ONLY = {"scale"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_reports_positive_figures(report: dict[str, Any], scenario: str) -> None:
    (result,) = [r for r in report["results"] if r["scenario"] == scenario]
    assert result["rows"] and result["data"] and result["seconds"] > 0
    for row in result["rows"]:
        assert row["value"] > 0, row
        if scenario in FIGURES_ONLY:  # scale points: figures with no baseline and no bar
            assert row["baseline"] is None and row["ratio"] is None and not row["goal"], row
            continue
        assert row["baseline"] is not None and row["baseline"] > 0, row
        assert row["ratio"] is not None and row["ratio"] > 0, row
        if row["goal"]:
            assert row["ok"] in (True, False), row
