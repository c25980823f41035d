"""Hints for the common mistakes: `depends:`, an unquoted `list[str]`, a misspelt action name."""

from __future__ import annotations

import pytest

from sternway.workflows._runbook import load_runbook_text
from sternway.workflows.errors import SpecError
from tests.cli import cli_env, sternway

FLOW_TYPE = """name: t
args:
  required:
    - {name: hosts, type: list[str]}
jobs:
  - {name: a, run: noop}
"""
LIST_TYPE = """name: t
args:
  required:
    - name: hosts
      type: [str]
jobs:
  - {name: a, run: noop}
"""
DEPENDS = """name: t
jobs:
  - {name: a, run: noop}
  - {name: b, run: noop, depends: [a]}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (FLOW_TYPE, "x.yaml:4 document: invalid YAML at column 31: while parsing a flow mapping"),
        (FLOW_TYPE, '; quote text with brackets, e.g. type: "list[str]"'),
        (LIST_TYPE, "x.yaml:5 args.required[0].type: must be a string, not a list: quote a type"),
        (DEPENDS, "x.yaml:4 jobs[1].depends: unknown field; did you mean 'after'?"),
    ],
)
def test_runbook_mistakes_get_a_hint(text: str, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        load_runbook_text(text, "x.yaml")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("command", ["submit", "validate"])
async def test_a_misspelt_action_gets_did_you_mean(command: str) -> None:
    result = await sternway(cli_env("127.0.0.1:1", "unused"), command, "deploy-sit")
    assert result.code == 2
    assert "unknown action 'deploy-sit'; did you mean 'deploy-site'?" in result.err
