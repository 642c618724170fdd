"""Each package's `__all__` names exactly the modules it has, so a reader can trust it."""

from __future__ import annotations

import importlib
import pkgutil

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
