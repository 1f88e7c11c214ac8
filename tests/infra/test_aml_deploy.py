"""`make aml-deploy` runs the documented `az ml` steps, in order, or refuses with a reason.

A stand-in `az` on PATH records its arguments, so the recipe runs for real without Azure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from shared.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "make"  # the Makefile drives every chore: make is always there
ARGS = ["AML_GROUP=fleet-rg", "AML_WORKSPACE=fleet-ws", "MODEL_VERSION=7"]
WS = "--resource-group fleet-rg --workspace-name fleet-ws"


def fake_az(bin_dir: Path, log: Path, *, existing: bool) -> None:
    """An `az` that logs each call; `show` finds the endpoint and deployment iff `existing`."""
    script = f"""#!/bin/bash
echo "$*" >> {log}
case "$*" in
  *"--query scoring_uri"*) echo https://fleetscore-anomaly.westeurope.inference.ml.azure.com/score ;;
  "ml online-endpoint show"*|"ml online-deployment show"*) {"exit 0" if existing else "exit 1"} ;;
esac
"""
    path = bin_dir / "az"
    path.write_text(script)
    path.chmod(0o755)


def run(tmp_path: Path, *args: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAKE, "--no-print-directory", "-C", str(ROOT), "aml-deploy", *args],
        env={"PATH": path, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_aml_deploy_refuses_without_the_azure_cli(tmp_path):
    result = run(tmp_path, *ARGS, path=str(tmp_path))
    assert result.returncode != 0
    assert "the Azure CLI (az) is not installed" in result.stdout


def test_aml_deploy_names_its_missing_arguments(tmp_path):
    fake_az(tmp_path, tmp_path / "az.log", existing=False)
    result = run(tmp_path, path=f"{tmp_path}:/usr/bin:/bin")
    assert result.returncode != 0
    assert "usage: make aml-deploy AML_GROUP=" in result.stdout


def test_aml_deploy_creates_endpoint_and_deployment_in_order(tmp_path):
    log = tmp_path / "az.log"
    fake_az(tmp_path, log, existing=False)
    result = run(tmp_path, *ARGS, path=f"{tmp_path}:/usr/bin:/bin")
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().splitlines() == [
        "extension show --name ml",
        "ml model create --name fleetscore-anomaly --version 7 --path model/artifacts "
        f"--type custom_model {WS} --output none",
        f"ml online-endpoint show --name fleetscore-anomaly {WS} --output none",
        f"ml online-endpoint create --file model/deploy/endpoint.yml {WS} --output none",
        f"ml online-deployment show --name blue --endpoint-name fleetscore-anomaly {WS} --output none",
        "ml online-deployment create --file model/deploy/deployment.yml "
        f"--set model=azureml:fleetscore-anomaly:7 --all-traffic {WS} --output none",
        f"ml online-endpoint show --name fleetscore-anomaly {WS} --query scoring_uri --output tsv",
    ]
    assert (
        "AML_ENDPOINT_URL=https://fleetscore-anomaly.westeurope.inference.ml.azure.com/score"
        in result.stdout
    )


def test_aml_deploy_updates_an_existing_deployment(tmp_path):
    log = tmp_path / "az.log"
    fake_az(tmp_path, log, existing=True)
    result = run(tmp_path, *ARGS, path=f"{tmp_path}:/usr/bin:/bin")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert not any(" create --file" in c for c in calls)
    assert (
        "ml online-deployment update --file model/deploy/deployment.yml "
        f"--set model=azureml:fleetscore-anomaly:7 {WS} --output none"
    ) in calls


def test_aml_deploy_endpoint_and_deployment_names_match_the_yaml():
    endpoint = (ROOT / "model/deploy/endpoint.yml").read_text()
    deployment = (ROOT / "model/deploy/deployment.yml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "\nname: fleetscore-anomaly\n" in endpoint
    assert "\nname: blue\n" in deployment
    assert "\nendpoint_name: fleetscore-anomaly\n" in deployment
    assert "AML_ENDPOINT_NAME := fleetscore-anomaly" in makefile
    assert "AML_DEPLOYMENT_NAME := blue" in makefile


def _yaml_int(text: str, key: str) -> int:
    [value] = re.findall(rf"^\s*{key}:\s*\"?(\d+)\"?", text, re.M)
    return int(value)


def test_deployment_numbers_fit_the_scoring_client():
    """model/deploy/README.md "Why the numbers", held to the settings' defaults."""
    deployment = (ROOT / "model/deploy/deployment.yml").read_text()
    defaults = {s.name: s.default for s in SETTINGS}
    workers = _yaml_int(deployment, "WORKER_COUNT")
    per_instance = _yaml_int(deployment, "max_concurrent_requests_per_instance")
    instances = _yaml_int(deployment, "instance_count")
    timeout_ms = _yaml_int(deployment, "request_timeout_ms")
    assert workers == per_instance == 4  # one worker per vCPU of Standard_DS3_v2
    assert "instance_type: Standard_DS3_v2" in deployment
    # AML answers its own 408 before the client's read timeout gives up on the connection...
    assert timeout_ms < float(defaults["AML_TIMEOUT_SECONDS"]) * 1000
    # ...and a retry still fits in the batch's retry deadline.
    assert 2 * timeout_ms <= float(defaults["SCORE_RETRY_DEADLINE_SECONDS"]) * 1000
    # At least one score worker's full concurrency fits under AML's 429 line.
    assert int(defaults["SCORE_MAX_CONCURRENCY"]) <= 2 * per_instance * instances
