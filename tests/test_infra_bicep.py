"""Every Bicep file parses, read by a real Bicep grammar, and says what the deployment relies on.

The Bicep CLI cannot be installed on our machines (it is a GitHub or NuGet download), so
`bicep build` has never run on these files. pycep-parser (PyPI) parses them with a Lark
grammar of the Bicep language: that catches syntax errors (an unclosed brace, a missing
colon, a misspelt keyword), not what only the compiler knows (undefined symbols, types,
resource properties, API versions). tests/test_infra.py checks the wiring as text.

Known limits of pycep-parser 0.7.1 (its grammar is pycep/bicep.lark), found by feeding it
Bicep: it has no rule for the object spread operator (`{ ...a, b: 1 }`), and it treats a
newline as a token, so a conditional broken before its `?` or `:` (`cond\n  ? a\n  : b`)
fails to parse (the rule is `value_brackets "?" value_brackets ":" value_brackets`).
infra/ uses neither: conditionals stay on one line. It accepts nullable types, `.?`, `??`,
lambdas, user-defined types, `import` and indexed loops. Its JSON renders string literals
and identifiers alike ('python' and a param named python both become "python"), so the
checks below compare only values where that cannot mislead.
"""

from __future__ import annotations

import json
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
# The extension bundle hotfix that moved the Durable Task Scheduler provider
# (DurableTask.AzureManaged) to a fixed version: azure-functions-extension-bundles PR #735.
DTS_HOTFIX_BUNDLE = (4, 38, 1)


@cache
def parsed(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def test_every_bicep_file_is_found() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert {"main.bicep", "app/api.bicep", "app/openai.bicep", "app/durable-task.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path) -> None:
    tree = parsed(path)
    assert tree.get("parameters") or tree.get("resources"), f"{path.name}: parsed to nothing"


@pytest.mark.parametrize(
    "broken",
    [
        "resource r 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'x'\n",  # unclosed brace
        "var o = {\n  a 1\n}\n",  # missing colon
        "parm a string\n",  # misspelt keyword
        "var a = 'abc\n",  # unterminated string
        "var o = {\n  a = 1\n}\n",  # '=' inside an object
    ],
    ids=["unclosed-brace", "missing-colon", "misspelt-keyword", "unterminated-string", "equals-in-object"],
)
def test_the_parser_rejects_broken_bicep(broken: str) -> None:
    """The parse test above means something only if the parser refuses syntax errors."""
    with pytest.raises(Exception):  # noqa: B017  lark raises UnexpectedToken or UnexpectedCharacters
        BicepParser().parse(text=broken)


# ---- What the issue fixed, read from the parsed files ----


def test_scheduler_sku_is_a_plain_ternary_not_a_union() -> None:
    """Regression: the SKU was built with union(...); the official samples write a ternary."""
    scheduler = parsed(INFRA / "app" / "durable-task.bicep")["resources"]["scheduler"]["config"]
    sku = scheduler["properties"]["sku"]
    assert "function" not in sku, f"sku is built by a function call: {json.dumps(sku)}"
    ternary = sku["operator"]
    assert ternary["type"] == "conditional" and ternary["operands"]["condition"] == "dedicated"
    assert ternary["operands"]["true_value"] == {"name": "skuName", "capacity": "dedicatedCapacity"}
    assert ternary["operands"]["false_value"] == {"name": "skuName"}


def test_the_app_gets_the_v1_endpoint_and_no_api_version() -> None:
    """The /openai/v1 base URL needs no api-version, so a newer model needs no client change."""
    openai = parsed(INFRA / "app" / "openai.bicep")
    v1 = openai["outputs"]["v1Endpoint"]["value"]["operator"]["operands"]
    assert {v1["true_value"], v1["false_value"]} == {"${accountEndpoint}openai/v1", "${accountEndpoint}/openai/v1"}

    main = parsed(INFRA / "main.bicep")
    passed = main["modules"]["api"]["config"]["params"]["openAiEndpoint"]["operator"]["operands"]
    assert passed["operand_1"] == "openAi"
    assert passed["operand_2"]["operator"]["operands"] == {"operand_1": "outputs", "operand_2": "v1Endpoint"}
    assert main["outputs"]["AZURE_OPENAI_ENDPOINT"]["value"]["operator"]["operands"]["operand_2"] == (
        passed["operand_2"]
    ), "azd's AZURE_OPENAI_ENDPOINT output should be the URL the app uses"

    settings = parsed(INFRA / "app" / "api.bicep")["variables"]["appSettings"]["value"]
    assert settings["AZURE_OPENAI_ENDPOINT"] == "openAiEndpoint"
    assert "AZURE_OPENAI_API_VERSION" not in settings


def test_the_chat_deployment_keeps_its_version_until_it_expires() -> None:
    deployment = parsed(INFRA / "app" / "openai.bicep")["resources"]["chatDeployment"]["config"]
    assert deployment["properties"]["versionUpgradeOption"] == "OnceCurrentVersionExpired"


def test_python_runtime_meets_requires_python_and_is_the_one_documented() -> None:
    site = parsed(INFRA / "app" / "api.bicep")["resources"]["functionApp"]["config"]
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime["name"] == "python"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    floor = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert floor, pyproject["project"]["requires-python"]
    assert tuple(map(int, runtime["version"].split("."))) >= tuple(map(int, floor.groups())), runtime
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert f"Python {runtime['version']}" in readme, "infra/README.md should name the deployed Python version"


def test_extension_bundle_floor_carries_the_dts_provider_hotfix() -> None:
    bundle = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))["extensionBundle"]
    match = re.fullmatch(r"\[(\d+)\.(\d+)\.(\d+), 5\.0\.0\)", bundle["version"])
    assert match, bundle["version"]
    assert tuple(map(int, match.groups())) >= DTS_HOTFIX_BUNDLE, bundle["version"]
