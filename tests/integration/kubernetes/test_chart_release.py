"""The release workflow as GitHub Actions would run it on a tag: it builds the Dockerfile for
both architectures and publishes the image where the chart's default points, under the
chart's appVersion, pinned to a base image digest; the chart ships with the tag it checks."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from empath.operator import main

REPO = Path(__file__).resolve().parents[3]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
CHART = REPO / "charts" / "empath"


def workflow() -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True.
    found = yaml.safe_load(WORKFLOW.read_text())
    found["on"] = found.pop(True)
    return dict(found)


def steps() -> list[dict[str, Any]]:
    return list(workflow()["jobs"]["release"]["steps"])


def test_a_version_tag_starts_the_release_and_it_may_push_packages() -> None:
    found = workflow()
    (pattern,) = found["on"]["push"]["tags"]
    assert pattern == "v[0-9]+.[0-9]+.[0-9]+"
    assert found["permissions"] == {"contents": "read", "packages": "write"}


def test_the_image_is_built_for_amd64_and_arm64_from_a_pinned_base() -> None:
    (build,) = [s for s in steps() if str(s.get("uses", "")).startswith("docker/build-push")]
    assert build["with"]["file"] == "Dockerfile"
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True
    assert build["with"]["build-args"] == "BASE=${{ steps.base.outputs.image }}"
    (base,) = [s for s in steps() if s.get("id") == "base"]
    assert "imagetools inspect" in base["run"]
    assert "@${digest}" in base["run"]
    # The Dockerfile builds both stages from that one argument.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["${BASE}", "${BASE}"]
    assert f"ARG BASE={workflow()['env']['BASE']}" in dockerfile


def test_the_image_is_published_where_the_chart_pulls_it_under_its_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    env = workflow()["env"]
    assert values["image"]["repository"] == env["IMAGE"]
    assert values["image"]["tag"] == ""  # the chart's appVersion
    assert chart["version"] == chart["appVersion"]
    (build,) = [s for s in steps() if str(s.get("uses", "")).startswith("docker/build-push")]
    assert build["with"]["tags"] == "${{ env.IMAGE }}:${{ steps.version.outputs.version }}"


def test_the_version_check_passes_for_the_charts_own_tag_and_fails_for_another(
    tmp_path: Path,
) -> None:
    """The step's script, run as the runner would, in this checkout."""
    (check,) = [s for s in steps() if s.get("id") == "version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    env = {"IMAGE": workflow()["env"]["IMAGE"], "PATH": "/usr/bin:/bin"}

    def run(tag: str, output: Path) -> int:
        return subprocess.run(
            ["bash", "-e", "-c", check["run"]],
            cwd=REPO,
            env={**env, "GITHUB_REF_NAME": tag, "GITHUB_OUTPUT": str(output)},
            capture_output=True,
            timeout=30,
        ).returncode

    output = tmp_path / "github-output"
    assert run(f"v{chart['appVersion']}", output) == 0
    assert output.read_text().strip() == f"version={chart['appVersion']}"
    assert run("v99.0.0", output) != 0


def test_the_operator_settings_the_chart_sets_are_ones_it_reads(tmp_path: Path) -> None:
    """Each EMPATH_OPERATOR_* the chart's Deployment sets parses as the operator's setting."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render({}, name="empath", namespace="mail", is_install=True)
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all(files["empath/templates/operator.yaml"])
        if doc and doc["kind"] == "Deployment"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {
        e["name"].removeprefix(main.PREFIX).lower(): e["value"]
        for e in container["env"]
        if e["name"].startswith(main.PREFIX) and "value" in e
    }
    # The key file is the chart's operator key Secret, mounted: here, a file of its own.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "operator-key"]
    assert env.pop("key_file") == f"{mount['mountPath']}/key"
    secret = yaml.safe_load(files["empath/templates/operator-key.yaml"])
    (tmp_path / "key").write_bytes(base64.b64decode(secret["data"]["key"]))
    env["key_file"] = str(tmp_path / "key")
    settings = main.OperatorSettings(**{k: v for k, v in env.items() if v != ""})
    assert settings.resync_seconds == 300
    assert main.operator_key(settings) == base64.b64decode(secret["data"]["key"])
    assert settings.apply_crds is True
