"""Each package's `__all__` names exactly the modules it has, so a reader can trust it."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

PACKAGES = [
    "empath.core",
    "empath.ingress",
    "empath.spool",
    "empath.delivery",
    "empath.control",
    "empath.operator",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_a_package_lists_every_module_it_has_and_no_other(name: str) -> None:
    package = importlib.import_module(name)
    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert sorted(package.__all__) == sorted(modules)


@pytest.mark.parametrize("name", PACKAGES)
def test_the_readme_layout_names_every_module_of_a_package(name: str) -> None:
    package = importlib.import_module(name)
    folder = name.rpartition(".")[2]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith(f"| `{folder}/` |")]
    missing = [
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if f"`{info.name}`" not in row and f"`{info.name}/`" not in row
    ]
    assert not missing, f"README's layout row for {folder}/ does not name {missing}"


def test_the_readme_layout_names_every_area_of_the_integration_tests() -> None:
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| `tests/` |")]
    named = row.partition("`tests/integration/<area>/` (")[2].partition(")")[0].split(", ")
    areas = [
        p.name for p in (root / "tests" / "integration").iterdir() if (p / "__init__.py").exists()
    ]
    assert sorted(named) == sorted(areas)
