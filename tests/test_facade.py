"""The public facade, sternway/__init__.py: one table drives it.

``_EXPORTS`` (module -> names) makes ``__all__``, the lazy ``__getattr__`` and ``dir()``; the
imports under ``TYPE_CHECKING``, the part type checkers read, must say the same.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sternway


def test_every_name_in_all_resolves_to_the_object_of_its_module() -> None:
    assert sternway.__all__
    for name in sternway.__all__:
        module = importlib.import_module(sternway._WHERE[name])
        assert getattr(sternway, name) is getattr(module, name), name


def test_all_is_the_table_with_no_name_twice_and_dir_lists_it() -> None:
    listed = [name for names in sternway._EXPORTS.values() for name in names]
    assert len(listed) == len(set(listed))
    assert sternway.__all__ == sorted(listed)
    assert set(sternway.__all__) <= set(dir(sternway))


def test_the_imports_for_type_checkers_mirror_the_table() -> None:
    tree = ast.parse(Path(sternway.__file__).read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    imported: dict[str, str | None] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.unparse(node)
        for alias in node.names:
            # `import X as X`: an explicit re-export, which mypy strict requires.
            assert alias.asname == alias.name, ast.unparse(node)
            imported[alias.name] = node.module
    assert imported == sternway._WHERE


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'sternway' has no attribute 'Nope'"):
        sternway.Nope  # noqa: B018 (the access is the test)


def test_import_loads_nothing_behind_the_facade_and_star_import_binds_all() -> None:
    code = (
        "import json, sys, sternway\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('sternway.'))\n"
        "names = {}\n"
        "exec('from sternway import *', names)\n"
        "print(json.dumps([loaded, sorted(n for n in names if n != '__builtins__')]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded, bound = json.loads(done.stdout)
    assert loaded == []
    assert bound == sternway.__all__
