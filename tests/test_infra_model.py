"""The preprovision model check (infra/scripts/check_model.py), run the way azd runs it.

Each test runs the script in a subprocess whose PATH holds only a fake `az`
(tests/fixtures/az/fake_az.py) that answers from recorded-shape JSON, with the azd
environment passed as environment variables, and reads its exit status and output.
Also: the script's defaults are the Bicep defaults and main.parameters.json's, and
azure.yaml runs it before provisioning on both shells azd supports.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "infra" / "scripts" / "check_model.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "az"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"

MODEL_LIST = "cognitiveservices model list"
USAGE_LIST = "cognitiveservices usage list"
DEPLOYMENT_LIST = "cognitiveservices account deployment list"
NOT_SIGNED_IN = {"stderr": "ERROR: Please run 'az login' to setup account.", "exit": 1}

# azd variable -> main.bicep param it sets (main.parameters.json) and the script reads.
MODEL_VARIABLES = {
    "AZURE_OPENAI_MODEL_NAME": "openAiModelName",
    "AZURE_OPENAI_MODEL_VERSION": "openAiModelVersion",
    "AZURE_OPENAI_DEPLOYMENT_SKU": "openAiDeploymentSkuName",
    "AZURE_OPENAI_DEPLOYMENT_CAPACITY": "openAiDeploymentCapacity",
    "AZURE_OPENAI_CHAT_DEPLOYMENT": "openAiDeploymentName",
}


@dataclass(frozen=True)
class Run:
    status: int
    stdout: str
    stderr: str
    az_calls: list[list[str]]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


RunCheck = Callable[..., Run]


def sweden_models() -> list[dict]:
    return json.loads((FIXTURES / "model-list.swedencentral.json").read_text(encoding="utf-8"))


@pytest.fixture
def run_check(tmp_path: Path) -> RunCheck:
    """Run the script with a fake `az` answering `answers` ({command: answer}) and the azd `env`."""
    if sys.platform == "win32":
        pytest.skip("the fake az is launched by a POSIX sh script")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "az"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FIXTURES / "fake_az.py"}" "$@"\n')
    launcher.chmod(0o755)
    log = tmp_path / "az-calls.jsonl"

    def run(answers: dict[str, dict], env: dict[str, str] | None = None, *, az_on_path: bool = True) -> Run:
        scenario = tmp_path / "scenario.json"
        scenario.write_text(json.dumps(answers), encoding="utf-8")
        log.write_text("")
        process_env = {
            "PATH": str(bin_dir) if az_on_path else str(tmp_path / "empty"),
            "FAKE_AZ_SCENARIO": str(scenario),
            "FAKE_AZ_LOG": str(log),
            "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
            "AZURE_LOCATION": "swedencentral",
            **(env or {}),
        }
        done = subprocess.run(
            [sys.executable, str(SCRIPT)], env=process_env, capture_output=True, text=True, timeout=60, check=False
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return Run(done.returncode, done.stdout, done.stderr, calls)

    return run


def answers(models: str | Path = "model-list.swedencentral.json", usages: str = "usage-list.swedencentral.json",
            **extra: dict) -> dict[str, dict]:
    found = {MODEL_LIST: {"stdout": str(FIXTURES / models)}, USAGE_LIST: {"stdout": str(FIXTURES / usages)}}
    found.update({command.replace("_", " "): answer for command, answer in extra.items()})
    return found


def one_paragraph(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


# ---- The region offers it, or says what is missing ----


def test_offered_with_quota_prints_one_ok_line(run_check: RunCheck) -> None:
    run = run_check(answers())
    assert run.status == 0, run.output
    assert run.stderr == ""
    assert one_paragraph(run.stdout)
    assert run.stdout.startswith("Azure OpenAI model check OK: gpt-5.6-luna version 2026-07-09 (GlobalStandard, 30k")
    assert "swedencentral" in run.stdout and "980 of 1000" in run.stdout and "2028-01-11" in run.stdout
    for call in run.az_calls:  # azd's subscription, not whatever `az account set` chose
        assert call[-2:] == ["--subscription", SUBSCRIPTION] and "--output" in call
    assert [call[:3] for call in run.az_calls] == [MODEL_LIST.split(), USAGE_LIST.split()]
    assert run.az_calls[0][3:5] == ["--location", "swedencentral"]


def test_the_openai_account_region_is_checked_not_the_main_region(run_check: RunCheck) -> None:
    run = run_check(answers(), {"AZURE_LOCATION": "westus", "AZURE_OPENAI_LOCATION": "swedencentral"})
    assert run.status == 0, run.output
    assert {call[4] for call in run.az_calls} == {"swedencentral"}


def test_model_not_offered_in_the_region_stops_provisioning(run_check: RunCheck) -> None:
    # westus lists gpt-5.6-luna for AIServices accounts only: the OpenAI account cannot deploy it.
    run = run_check(answers("model-list.westus.json"), {"AZURE_LOCATION": "westus"})
    assert run.status == 1
    assert run.stdout == "" and one_paragraph(run.stderr)
    assert "gpt-5.6-luna is not offered to Azure OpenAI accounts in westus" in run.stderr
    assert "azd env set AZURE_OPENAI_LOCATION" in run.stderr and "AZURE_OPENAI_MODEL_NAME" in run.stderr


def test_version_not_offered_names_the_versions_that_are(run_check: RunCheck) -> None:
    run = run_check(answers(), {"AZURE_OPENAI_MODEL_NAME": "gpt-5-mini", "AZURE_OPENAI_MODEL_VERSION": "2025-10-01"})
    assert run.status == 1, run.output
    assert "version 2025-10-01 is not offered in swedencentral" in run.stderr
    assert "the versions offered there are 2025-08-07" in run.stderr
    assert "AZURE_OPENAI_MODEL_VERSION" in run.stderr


def test_sku_missing_names_the_deployment_types_offered(run_check: RunCheck) -> None:
    run = run_check(answers(), {"AZURE_OPENAI_DEPLOYMENT_SKU": "Standard"})
    assert run.status == 1, run.output
    assert one_paragraph(run.stderr)
    assert "offered in swedencentral as DataZoneStandard, GlobalProvisionedManaged, GlobalStandard, not as Standard" \
        in run.stderr
    assert "AZURE_OPENAI_DEPLOYMENT_SKU" in run.stderr


# ---- Quota ----


def test_no_quota_left_stops_provisioning_and_says_what_to_do(run_check: RunCheck) -> None:
    run = run_check(answers(usages="usage-list.swedencentral-full.json"))
    assert run.status == 1, run.output
    assert one_paragraph(run.stderr)
    assert "Not enough quota for gpt-5.6-luna version 2026-07-09 (GlobalStandard, 30k" in run.stderr
    assert "is 1000 thousand tokens per minute, 990 in use, so 10 is free" in run.stderr
    assert "AZURE_OPENAI_DEPLOYMENT_CAPACITY to 10 or less" in run.stderr
    assert "https://aka.ms/oai/stuquotarequest" in run.stderr and "AZURE_OPENAI_LOCATION" in run.stderr


def test_a_model_without_any_quota_entry_stops_provisioning(run_check: RunCheck) -> None:
    run = run_check(answers(), {"AZURE_OPENAI_MODEL_NAME": "gpt-5.6-terra",
                                "AZURE_OPENAI_DEPLOYMENT_SKU": "DataZoneStandard"})
    assert run.status == 1, run.output
    assert "no DataZoneStandard quota for gpt-5.6-terra in swedencentral" in run.stderr
    assert "OpenAI.DataZoneStandard.gpt-5.6-terra" in run.stderr


def test_reprovisioning_counts_the_quota_its_own_deployment_already_holds(run_check: RunCheck) -> None:
    """Regression: a second `azd up` must not fail because the first one's deployment uses the quota."""
    env = {"AZURE_RESOURCE_GROUP": "rg-trip", "AZURE_OPENAI_ACCOUNT_NAME": "oai-abc123",
           "AZURE_OPENAI_DEPLOYMENT_CAPACITY": "35"}
    full = answers(usages="usage-list.swedencentral-full.json",
                   cognitiveservices_account_deployment_list={"stdout": str(FIXTURES / "deployment-list.rg-trip.json")})
    run = run_check(full, env)
    assert run.status == 0, run.output  # 10 free + the 30 the existing deployment gives back
    assert "40 of 1000" in run.stdout
    assert run.az_calls[1][:8] == [*DEPLOYMENT_LIST.split(), "--resource-group", "rg-trip", "--name", "oai-abc123"]

    run = run_check(full, {**env, "AZURE_OPENAI_DEPLOYMENT_CAPACITY": "41"})
    assert run.status == 1
    assert "990 in use, 30 of it by this environment's own deployment, so 40 is free" in run.stderr


def test_an_existing_account_that_cannot_be_listed_holds_nothing(run_check: RunCheck) -> None:
    env = {"AZURE_RESOURCE_GROUP": "rg-gone", "AZURE_OPENAI_ACCOUNT_NAME": "oai-gone"}
    run = run_check(answers(cognitiveservices_account_deployment_list={"stderr": "ERROR: (ResourceGroupNotFound)"}),
                    env)
    assert run.status == 0, run.output
    assert "980 of 1000" in run.stdout


# ---- Retirement ----


def models_retiring_on(day: date) -> list[dict]:
    """The recorded model list, with gpt-5.6-luna's retirement moved to `day`."""
    models = sweden_models()
    for entry in models:
        if entry["model"]["name"] == "gpt-5.6-luna":
            entry["model"]["deprecation"]["inference"] = f"{day.isoformat()}T00:00:00Z"
            for sku in entry["model"]["skus"]:
                sku["deprecationDate"] = f"{day.isoformat()}T00:00:00Z"
    return models


def test_retirement_within_90_days_warns_but_provisions(run_check: RunCheck, tmp_path: Path) -> None:
    soon = date.today() + timedelta(days=30)
    models = tmp_path / "model-list.soon.json"
    models.write_text(json.dumps(models_retiring_on(soon)), encoding="utf-8")
    run = run_check(answers(models))
    assert run.status == 0, run.output
    warning, ok = run.stdout.strip().splitlines()
    assert warning.startswith(f"WARNING: gpt-5.6-luna version 2026-07-09 retires on {soon.isoformat()}, in 30 days")
    assert ok.startswith("Azure OpenAI model check OK")


def test_retirement_further_out_than_90_days_is_not_a_warning(run_check: RunCheck, tmp_path: Path) -> None:
    models = tmp_path / "model-list.later.json"
    models.write_text(json.dumps(models_retiring_on(date.today() + timedelta(days=91))), encoding="utf-8")
    run = run_check(answers(models))
    assert run.status == 0 and "WARNING" not in run.output, run.output


def test_a_retired_version_stops_provisioning(run_check: RunCheck) -> None:
    """Regression: gpt-4.1-mini 2025-04-14, the old default, retired on 2026-10-14 and deployments failed."""
    run = run_check(answers(), {"AZURE_OPENAI_MODEL_NAME": "gpt-4.1-mini", "AZURE_OPENAI_MODEL_VERSION": "2025-04-14"})
    assert run.status == 1, run.output
    assert one_paragraph(run.stderr)
    assert "gpt-4.1-mini version 2025-04-14 retired on 2026-10-14 in swedencentral" in run.stderr
    assert "infra/README.md" in run.stderr


# ---- When the check cannot run ----


def test_az_not_signed_in_says_run_az_login(run_check: RunCheck) -> None:
    run = run_check({MODEL_LIST: NOT_SIGNED_IN, USAGE_LIST: NOT_SIGNED_IN})
    assert run.status == 2
    assert one_paragraph(run.stderr)
    assert run.stderr.startswith("Azure OpenAI model check could not run: The Azure CLI is not signed in")
    assert "Run `az login`" in run.stderr and "AZURE_OPENAI_SKIP_MODEL_CHECK" in run.stderr


def test_az_missing_says_install_it(run_check: RunCheck) -> None:
    run = run_check(answers(), az_on_path=False)
    assert run.status == 2
    assert one_paragraph(run.stderr)
    assert "The Azure CLI (`az`) is not installed or not on PATH" in run.stderr
    assert "https://aka.ms/azure-cli" in run.stderr and run.az_calls == []


def test_az_printing_something_else_than_json_cannot_be_checked(run_check: RunCheck, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("Model list temporarily unavailable\n")
    run = run_check(answers(garbage))
    assert run.status == 2 and "not JSON" in run.stderr, run.output


def test_no_region_yet_skips_with_a_warning(run_check: RunCheck) -> None:
    run = run_check(answers(), {"AZURE_LOCATION": ""})
    assert run.status == 0, run.output
    assert run.stdout.startswith("WARNING: Azure OpenAI model check skipped: no region chosen yet")
    assert run.az_calls == []


def test_the_check_can_be_switched_off(run_check: RunCheck) -> None:
    run = run_check({}, {"AZURE_OPENAI_SKIP_MODEL_CHECK": "true"}, az_on_path=False)
    assert run.status == 0 and "skipped" in run.stdout and run.az_calls == []


def test_a_capacity_that_is_not_a_number_is_reported(run_check: RunCheck) -> None:
    run = run_check(answers(), {"AZURE_OPENAI_DEPLOYMENT_CAPACITY": "30k"})
    assert run.status == 2
    assert "AZURE_OPENAI_DEPLOYMENT_CAPACITY is '30k'" in run.stderr


# ---- One set of defaults, one hook ----


def script_defaults() -> dict[str, str]:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["DEFAULTS"]:
            return ast.literal_eval(node.value)
    raise AssertionError("check_model.py has no DEFAULTS")


def test_script_bicep_and_parameters_file_share_the_model_defaults() -> None:
    bicep = BicepParser().parse(file_path=ROOT / "infra" / "main.bicep")["parameters"]
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    defaults = script_defaults()
    for variable, param in MODEL_VARIABLES.items():
        bicep_default = str(bicep[param]["default"])
        assert defaults[variable] == bicep_default, (
            f"{variable}: check_model.py falls back to {defaults[variable]!r}, main.bicep to {bicep_default!r}"
        )
        assert parameters[param]["value"] == f"${{{variable}={bicep_default}}}", f"main.parameters.json: {param}"
    assert parameters["openAiLocation"]["value"] == "${AZURE_OPENAI_LOCATION}"  # the region the script checks


def test_readme_documents_the_model_defaults() -> None:
    readme = (ROOT / "infra" / "README.md").read_text(encoding="utf-8")
    for variable in ("AZURE_OPENAI_MODEL_NAME", "AZURE_OPENAI_MODEL_VERSION", "AZURE_OPENAI_DEPLOYMENT_SKU"):
        assert re.search(rf"\| `{variable}` \| `{re.escape(script_defaults()[variable])}`", readme), variable
    assert "AZURE_OPENAI_SKIP_MODEL_CHECK" in readme


def test_azure_yaml_runs_the_check_before_provisioning_on_both_shells() -> None:
    project = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    hook = project["hooks"]["preprovision"]
    assert hook["posix"] == {"shell": "sh", "run": "python3 infra/scripts/check_model.py", "continueOnError": False}
    assert hook["windows"] == {"shell": "pwsh", "run": "python infra/scripts/check_model.py", "continueOnError": False}
    assert (ROOT / hook["posix"]["run"].split()[-1]).is_file()


def test_the_script_needs_only_the_standard_library() -> None:
    """It runs on the deploying machine before any venv exists."""
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= sys.stdlib_module_names, sorted(imported - sys.stdlib_module_names)
