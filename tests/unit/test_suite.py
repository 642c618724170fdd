"""The test suite's own rules: tests share code through support modules and conftest
fixtures, never by importing another test module (or conftest) by name."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            last = [m.rpartition(".")[2] for m in modules if m.startswith("tests")]
            if any(name.startswith("test_") or name == "conftest" for name in last):
                found.append(f"{path.relative_to(TESTS.parent)}:{node.lineno}")
    assert not found, f"imports of test modules: {found}"
