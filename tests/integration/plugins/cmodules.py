"""C modules for the plugin tests, compiled with the machine's C compiler as the README says:
the example of `examples/c/` and the tests' own in `c/`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HEADER = REPO / "ingress/src/empath/ingress"
SOURCES = Path(__file__).resolve().parent / "c"
POLICY = REPO / "examples/c/policy.c"


def build(source: Path, directory: Path) -> Path:
    """`source` compiled into a shared library in `directory`."""
    compiler = shutil.which("cc")
    assert compiler is not None, "the tests need a C compiler (cc)"
    library = directory / f"{source.stem}.so"
    flags = ["-shared", "-fPIC", "-Wall", "-Werror", f"-I{HEADER}"]
    subprocess.run([compiler, *flags, str(source), "-o", str(library)], check=True)
    return library
