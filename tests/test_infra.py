"""The deployment files agree with each other and with settings.py.

No network and no Bicep CLI: the Bicep is read as text by the small reader
below (strings and comments blanked before brackets are matched), which is
enough for the shapes infra/ uses. What is checked:

- azure.yaml and infra/main.parameters.json: the azd service and the
  environment bindings; every module file exists; every main.bicep param is
  given or defaulted, and a `${VAR=default}` in the parameters file repeats
  the Bicep default.
- The app settings (`var appSettings` in infra/app/api.bicep) against
  settings.SETTINGS, in both directions, and the values that make the app use
  its identity (Entra Redis, managed-identity scheduler and storage).
- host.json, local.settings.json.template and .funcignore.
- No keys: no listKeys(), local auth off on storage, OpenAI, App Insights and
  Redis; every grant in rbac.bicep with guid() names and named role ids.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing import ROOT
from travelplanner.settings import SETTINGS

INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
API = INFRA / "app" / "api.bicep"
RBAC = INFRA / "app" / "rbac.bicep"

# Settings the cloud deployment cannot run without.
CLOUD_REQUIRED = {
    "DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
    "TASKHUB_NAME",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT_NAME",
    "AZURE_CLIENT_ID",
    "REDIS_CONNECTION_STRING",
    "REDIS_AUTH",
}
# Optional settings (default None) that Azure deliberately leaves unset.
LEFT_UNSET_IN_AZURE = {
    "AZURE_OPENAI_API_KEY": "the account has keys disabled; the app signs in with its identity",
    "AZURE_OPENAI_API_VERSION": "AZURE_OPENAI_ENDPOINT is the /openai/v1 endpoint, which takes no api-version",
    "OPENAI_API_KEY": "OpenAI-compatible endpoints are for the standalone host",
    "OPENAI_BASE_URL": "OpenAI-compatible endpoints are for the standalone host",
    "API_KEY": "the Functions front end checks function keys instead",
    "LISTEN_FD": "the standalone host's process group sets it for its own web processes",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "Azure exports to Application Insights (APPLICATIONINSIGHTS_CONNECTION_STRING)",
}
# Settings that only mean something to the standalone host, or are secrets.
NEVER_IN_AZURE = {
    "HOST", "PORT", "HOST_ROLE", "API_KEY", "ALLOW_PUBLIC_BIND", "DATA_DIR",
    "OFFLINE_MODEL_CHUNKS_PER_SECOND", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL",
    "AZURE_OPENAI_API_KEY", "LISTEN_FD", "WORKER_PROCESSES", "WEB_PROCESSES", "ALLOWED_HOSTS", "ALLOWED_ORIGINS",
    "HTTP_HEADER_TIMEOUT_SECONDS", "HTTP_BODY_TIMEOUT_SECONDS", "HTTP_SEND_TIMEOUT_SECONDS", "HTTP_MAX_CONNECTIONS",
}
# App settings the Functions host or the Python worker reads, not settings.py.
HOST_SETTINGS = (
    "AzureWebJobsStorage", "AzureWebJobsStorage__*", "APPLICATIONINSIGHTS_*", "FUNCTIONS_*",
    "PYTHON_ENABLE_INIT_INDEXING", "PYTHON_THREADPOOL_THREAD_COUNT", "PYTHON_ENABLE_OPENTELEMETRY",
    "AzureFunctionsJobHost__*",
)
# Flex Consumption rejects these (the runtime and package live in functionAppConfig).
REJECTED_BY_FLEX = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "AzureWebJobsStorage",
}
ROLE_IDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "0ad04412-c4d5-4796-b79c-f76d14c8d402": "Durable Task Data Contributor",
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd": "Cognitive Services OpenAI User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
# A stable extension bundle known to carry the Durable Task Scheduler (azureManaged) provider.
MIN_BUNDLE = (4, 38, 0)
FRONT_END_TIMEOUT_SECONDS = 230


# ---- A small Bicep reader ----


@dataclass(frozen=True)
class Bicep:
    """One file: `code` has comments and string contents blanked, `text` only comments; same offsets."""

    path: Path
    code: str
    text: str

    @classmethod
    def read(cls, path: Path) -> Bicep:
        code, text = _blank(path.read_text(encoding="utf-8"))
        return cls(path, code, text)

    def block(self, start: int) -> tuple[int, int]:
        """(open, close) offsets of the first `{` at or after `start` and its matching `}`."""
        open_at = self.code.index("{", start)
        depth = 0
        for k in range(open_at, len(self.code)):
            depth += {"{": 1, "}": -1}.get(self.code[k], 0)
            if depth == 0:
                return open_at, k
        raise AssertionError(f"{self.path.name}: unbalanced braces after offset {start}")

    def object_entries(self, open_at: int, close_at: int) -> dict[str, str]:
        """Top-level `key: value` lines of the object literal between the offsets."""
        entries: dict[str, str] = {}
        depth = 0
        line_start = open_at + 1
        for k in range(open_at + 1, close_at + 1):
            if self.code[k] == "\n" or k == close_at:
                if depth == 0:
                    m = re.match(r"\s*(?:'([^']+)'|([A-Za-z_]\w*))\s*:\s*(.*)", self.text[line_start:k])
                    if m:
                        entries[m.group(1) or m.group(2)] = m.group(3).strip()
                depth += _nesting(self.code[line_start:k])
                line_start = k + 1
        return entries

    def resources(self) -> Iterator[tuple[str, str, bool, str]]:
        """(symbol, type, existing, body text) of every resource declaration, nested ones included."""
        pattern = re.compile(r"^\s*resource\s+(\w+)\s+'([^']+)'\s*(existing)?\s*=", re.M)
        for m in pattern.finditer(self.text):
            open_at, close_at = self.block(m.end())
            yield m.group(1), m.group(2), bool(m.group(3)), self.text[open_at : close_at + 1]

    def params(self) -> dict[str, Param]:
        found: dict[str, Param] = {}
        lines = self.text.splitlines()
        for index, line in enumerate(lines):
            m = re.match(r"param\s+(\w+)\s+[\w?\[\]]+\s*(?:=\s*(.+))?$", line.strip())
            if not m:
                continue
            # The decorators are the lines right above: `@name(...)`, or the indented/closing
            # lines of a decorator that spans several lines.
            start = index
            while start > 0 and re.match(r"@|\s+\S|\]\)|\}\)|\)", lines[start - 1]):
                start -= 1
            decorators = "\n".join(lines[start:index])
            found[m.group(1)] = Param(m.group(1), _literal(m.group(2)), m.group(2) is not None, decorators)
        return found

    def outputs(self) -> set[str]:
        return set(re.findall(r"^output\s+(\w+)\s", self.text, re.M))

    def modules(self) -> list[str]:
        return [p for p in re.findall(r"^\s*module\s+\w+\s+'([^']+)'", self.text, re.M) if ":" not in p]


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    has_default: bool
    decorators: str

    def decorator_value(self, name: str) -> int | None:
        m = re.search(rf"^@{name}\((-?\d+)\)", self.decorators, re.M)
        return int(m.group(1)) if m else None


def _blank(source: str) -> tuple[str, str]:
    """Blank comments in both copies and string contents (interpolations too) in the first; keep offsets."""
    code, text = list(source), list(source)

    def clear(buf: list[str], a: int, b: int) -> None:
        for k in range(a, min(b, len(buf))):
            if buf[k] != "\n":
                buf[k] = " "

    stack: list[str | int] = []  # "str", or an int: brace depth inside a ${...}
    i, n = 0, len(source)
    while i < n:
        if stack and stack[-1] == "str":
            if source[i] == "\\":
                clear(code, i, i + 2)
                i += 2
            elif source[i] == "'":
                stack.pop()
                i += 1
            elif source.startswith("${", i):
                clear(code, i, i + 2)
                stack.append(0)
                i += 2
            else:
                clear(code, i, i + 1)
                i += 1
            continue
        if source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
            clear(code, i, end)
            clear(text, i, end)
            i = end
            continue
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            clear(code, i, end)
            clear(text, i, end)
            i = end
            continue
        if source.startswith("'''", i):
            end = source.find("'''", i + 3)
            end = n if end < 0 else end + 3
            clear(code, i + 3, end - 3)
            i = end
            continue
        char = source[i]
        if stack:  # inside an interpolation, itself inside a string
            clear(code, i, i + 1)
            if char == "{":
                stack[-1] = int(stack[-1]) + 1
            elif char == "}":
                if stack[-1] == 0:
                    stack.pop()
                else:
                    stack[-1] = int(stack[-1]) - 1
            elif char == "'":
                stack.append("str")
        elif char == "'":
            stack.append("str")
        i += 1
    return "".join(code), "".join(text)


def _nesting(code_line: str) -> int:
    return sum(code_line.count(c) for c in "{[(") - sum(code_line.count(c) for c in "}])")


def _literal(raw: str | None) -> object:
    if raw is None:
        return None
    raw = raw.strip()
    if re.fullmatch(r"'[^']*'", raw):
        return raw[1:-1]
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if raw in ("true", "false"):
        return raw == "true"
    return raw  # an expression


def _is_host_setting(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in HOST_SETTINGS)


def _bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


# ---- Fixtures ----


@pytest.fixture(scope="module")
def settings_by_name() -> dict[str, Any]:
    return {s.name: s for s in SETTINGS}


@pytest.fixture(scope="module")
def api() -> Bicep:
    return Bicep.read(API)


@pytest.fixture(scope="module")
def app_settings(api: Bicep) -> dict[str, str]:
    m = re.search(r"^var\s+appSettings\s*=", api.code, re.M)
    assert m, "infra/app/api.bicep must declare `var appSettings = { ... }`"
    entries = api.object_entries(*api.block(m.end()))
    assert entries, "no app settings parsed from `var appSettings`"
    return entries


@pytest.fixture(scope="module")
def parameters() -> dict[str, str]:
    data = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    return {name: entry["value"] for name, entry in data["parameters"].items()}


@pytest.fixture(scope="module")
def host_json() -> dict:
    return json.loads((ROOT / "host.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def local_values() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.json.template").read_text(encoding="utf-8"))["Values"]


# ---- azure.yaml and the parameters file ----


def test_azure_yaml_deploys_this_folder_as_the_api_function_service() -> None:
    project = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert project["name"]
    assert project["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    assert project.get("infra", {}).get("path", "infra") == "infra"


def test_parameters_file_binds_the_azd_environment(parameters: dict[str, str]) -> None:
    assert parameters["environmentName"] == "${AZURE_ENV_NAME}"
    assert parameters["location"] == "${AZURE_LOCATION}"
    assert parameters["principalId"] == "${AZURE_PRINCIPAL_ID}"


def test_every_module_file_exists() -> None:
    pending, seen = [MAIN], set()
    while pending:
        bicep_path = pending.pop()
        seen.add(bicep_path)
        for relative in Bicep.read(bicep_path).modules():
            target = (bicep_path.parent / relative).resolve()
            assert target.is_file(), f"{bicep_path.relative_to(ROOT)} references missing module {relative}"
            if target not in seen:
                pending.append(target)
    assert len(seen) >= 8, "main.bicep should wire one module per concern"


def test_module_calls_match_module_params_and_outputs() -> None:
    """What `bicep build` would reject: an unknown or missing module param, an output that does not exist."""
    main = Bicep.read(MAIN)
    modules: dict[str, Bicep] = {}
    for m in re.finditer(r"^module\s+(\w+)\s+'([^']+)'\s*=", main.text, re.M):
        module = modules[m.group(1)] = Bicep.read(MAIN.parent / m.group(2))
        body_open, body_close = main.block(m.end())
        body = main.code[body_open:body_close]
        params_at = re.search(r"\bparams:\s*\{", body)
        passed = set(main.object_entries(*main.block(body_open + params_at.start()))) if params_at else set()
        declared = module.params()
        unknown = passed - set(declared)
        missing = {name for name, p in declared.items() if not p.has_default} - passed
        assert not unknown, f"module {m.group(1)} does not declare {sorted(unknown)}"
        assert not missing, f"module {m.group(1)} needs {sorted(missing)}"
    for symbol, output in re.findall(r"\b(\w+)\.outputs\.(\w+)", main.text):  # interpolations too
        assert output in modules[symbol].outputs(), f"module {symbol} has no output {output}"


def test_main_bicep_only_wires_modules() -> None:
    main = Bicep.read(MAIN)
    types = {rtype.split("@")[0] for _, rtype, _, _ in main.resources()}
    assert types <= {"Microsoft.Resources/resourceGroups"}, f"main.bicep declares resources itself: {types}"


def test_every_main_param_is_given_or_has_a_default(parameters: dict[str, str]) -> None:
    declared = Bicep.read(MAIN).params()
    missing = [p.name for p in declared.values() if p.name not in parameters and not p.has_default]
    assert not missing, f"params with neither a default nor a value in main.parameters.json: {missing}"
    unknown = sorted(set(parameters) - set(declared))
    assert not unknown, f"main.parameters.json sets params main.bicep does not declare: {unknown}"


def test_parameter_file_defaults_repeat_the_bicep_defaults(parameters: dict[str, str]) -> None:
    declared = Bicep.read(MAIN).params()
    for name, value in parameters.items():
        m = re.fullmatch(r"\$\{(\w+)=([^}]*)\}", value)
        if m:
            assert declared[name].has_default, f"{name}: Bicep has no default to repeat"
            assert m.group(2) == str(declared[name].default), (
                f"{name}: main.parameters.json falls back to {m.group(2)!r}, main.bicep to {declared[name].default!r}"
            )
        elif value.startswith("${"):
            # azd passes an unset variable as '' and then uses the Bicep default only for '' defaults and numbers.
            default = declared[name].default
            assert not declared[name].has_default or default == "" or isinstance(default, int), (
                f"{name}: write ${{VAR={default}}} so an unset variable keeps the default"
            )


def test_main_outputs_what_the_app_and_readme_need() -> None:
    needed = {
        "AZURE_RESOURCE_GROUP", "SERVICE_API_NAME", "AZURE_FUNCTION_APP_NAME", "AZURE_FUNCTION_APP_URL",
        "AZURE_USER_ASSIGNED_IDENTITY_CLIENT_ID", "REDIS_HOST", "REDIS_CONNECTION_STRING",
        "DURABLE_TASK_SCHEDULER_ENDPOINT", "TASKHUB_NAME", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT_NAME",
    }
    missing = needed - Bicep.read(MAIN).outputs()
    assert not missing, f"main.bicep outputs missing: {sorted(missing)}"


def test_readme_documents_every_azd_variable(parameters: dict[str, str]) -> None:
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    variables = {m.group(1) for v in parameters.values() for m in [re.match(r"\$\{(\w+)", v)] if m}
    undocumented = sorted(v for v in variables if v not in readme)
    assert not undocumented, f"infra/README.md does not mention {undocumented}"


# ---- App settings against settings.py ----


def test_lists_in_this_test_name_real_settings(settings_by_name: dict[str, Any]) -> None:
    stale = sorted((CLOUD_REQUIRED | set(LEFT_UNSET_IN_AZURE) | NEVER_IN_AZURE) - set(settings_by_name))
    assert not stale, f"settings.py no longer has {stale}; update tests/test_infra.py"


def test_azure_sets_every_setting_the_cloud_needs(app_settings: dict[str, str]) -> None:
    missing = sorted(CLOUD_REQUIRED - set(app_settings))
    assert not missing, f"infra/app/api.bicep does not set {missing}"


def test_every_setting_is_set_by_azure_or_has_a_default(
    app_settings: dict[str, str], settings_by_name: dict[str, Any]
) -> None:
    undecided = sorted(
        name
        for name, setting in settings_by_name.items()
        if name not in app_settings and setting.default is None and name not in LEFT_UNSET_IN_AZURE
    )
    assert not undecided, (
        f"{undecided} have no default and Azure does not set them: set them in infra/app/api.bicep "
        "or add them to LEFT_UNSET_IN_AZURE with the reason"
    )


def test_every_app_setting_is_read_by_the_code_or_the_host(
    app_settings: dict[str, str], settings_by_name: dict[str, Any]
) -> None:
    unread = sorted(k for k in app_settings if k not in settings_by_name and not _is_host_setting(k))
    assert not unread, f"app settings nothing reads (not in settings.SETTINGS, not a host setting): {unread}"


def test_standalone_settings_and_secrets_are_not_set_in_azure(app_settings: dict[str, str]) -> None:
    assert not (NEVER_IN_AZURE & set(app_settings)), sorted(NEVER_IN_AZURE & set(app_settings))


def test_flex_consumption_rejected_settings_are_absent(app_settings: dict[str, str]) -> None:
    assert not (REJECTED_BY_FLEX & set(app_settings)), sorted(REJECTED_BY_FLEX & set(app_settings))


def test_app_settings_use_the_managed_identity(app_settings: dict[str, str]) -> None:
    assert app_settings["REDIS_AUTH"] == "'entra'"
    assert re.fullmatch(r"'rediss://\$\{\w+\}:\$\{\w+\}'", app_settings["REDIS_CONNECTION_STRING"])
    assert app_settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert app_settings["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"] == (
        "'Endpoint=${durableTaskEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'"
    )
    assert app_settings["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert app_settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    for service in ("blob", "queue", "table"):
        assert f"AzureWebJobsStorage__{service}ServiceUri" in app_settings
    assert app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "'ClientId=${identityClientId};Authorization=AAD'"
    )
    assert app_settings["PYTHON_ENABLE_INIT_INDEXING"] == "'1'"


def test_the_app_settings_object_is_what_gets_deployed(api: Bicep) -> None:
    assert re.search(r"name:\s*'appsettings'\s*\n\s*properties:\s*appSettings\b", api.text)
    assert "appSettings:" not in api.text, "app settings belong in `var appSettings` only"


def test_stream_responses_end_before_the_front_end_cuts_them(settings_by_name: dict[str, Any]) -> None:
    for path, name in ((MAIN, "streamMaxSeconds"), (API, "streamMaxSeconds")):
        limit = Bicep.read(path).params()[name].decorator_value("maxValue")
        assert limit is not None and limit < FRONT_END_TIMEOUT_SECONDS, f"{path.name}: {name} needs @maxValue < 230"
    default = Bicep.read(MAIN).params()["streamMaxSeconds"].default
    assert str(default) == settings_by_name["STREAM_MAX_SECONDS"].default


def test_function_app_is_flex_consumption_python_313_tagged_for_azd(api: Bicep) -> None:
    resources = {rtype.split("@")[0]: body for _, rtype, existing, body in api.resources() if not existing}
    plan, site = resources["Microsoft.Web/serverfarms"], resources["Microsoft.Web/sites"]
    assert "name: 'FC1'" in plan and "tier: 'FlexConsumption'" in plan
    assert "kind: 'functionapp,linux'" in site
    assert "'azd-service-name': 'api'" in site
    assert re.search(r"runtime:\s*\{\s*name:\s*'python'\s*version:\s*'3\.13'\s*\}", site)
    assert re.search(r"type:\s*'blobContainer'", site)
    assert re.search(r"authentication:\s*\{\s*type:\s*'UserAssignedIdentity'", site)
    for knob in ("instanceMemoryMB", "maximumInstanceCount", "perInstanceConcurrency"):
        assert f"{knob}:" in site, f"functionAppConfig.scaleAndConcurrency lacks {knob}"


# ---- host.json, local settings, .funcignore ----


def test_host_json_runs_durable_functions_on_the_scheduler(host_json: dict, app_settings: dict[str, str]) -> None:
    assert host_json["version"] == "2.0"
    bundle = host_json["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    m = re.fullmatch(r"\[(\d+)\.(\d+)\.(\d+), 5\.0\.0\)", bundle["version"])
    assert m and tuple(map(int, m.groups())) >= MIN_BUNDLE, bundle["version"]
    durable = host_json["extensions"]["durableTask"]
    assert durable["hubName"] == "%TASKHUB_NAME%"
    assert durable["storageProvider"]["type"] == "azureManaged"
    connection = durable["storageProvider"]["connectionStringName"]
    assert connection == "DURABLE_TASK_SCHEDULER_CONNECTION_STRING" and connection in app_settings
    assert re.fullmatch(r"\d{2}:\d{2}:\d{2}", host_json["functionTimeout"])
    assert host_json["logging"]["applicationInsights"]["samplingSettings"]["isEnabled"] is True


def test_entity_concurrency_matches_the_python_worker_threads(host_json: dict, api: Bicep) -> None:
    m = re.search(r"^var\s+agentRunsPerInstance\s*=\s*(\d+)", api.text, re.M)
    assert m, "api.bicep: var agentRunsPerInstance"
    assert host_json["extensions"]["durableTask"]["maxConcurrentEntityFunctions"] == int(m.group(1))


def test_local_settings_template_names_every_required_setting(
    local_values: dict[str, str], settings_by_name: dict[str, Any]
) -> None:
    required = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "PYTHON_ENABLE_INIT_INDEXING": "1",
        "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": "Endpoint=http://localhost:8080;Authentication=None",
        "TASKHUB_NAME": settings_by_name["TASKHUB_NAME"].default,
        "REDIS_CONNECTION_STRING": "redis://localhost:6379",
        "AZURE_OPENAI_ENDPOINT": "",
        "AZURE_OPENAI_DEPLOYMENT_NAME": "",
    }
    for name, value in required.items():
        assert local_values.get(name) == value, f"local.settings.json.template: {name}"
    unread = sorted(k for k in local_values if k not in settings_by_name and not _is_host_setting(k))
    assert not unread, f"local.settings.json.template sets what nothing reads: {unread}"


def test_funcignore_keeps_development_files_out_of_the_package() -> None:
    ignored = {line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()}
    for entry in (".venv", "tests", "bench", ".data", ".git*", "node_modules", "__pycache__", "infra",
                  "local.settings.json"):
        assert entry in ignored, f".funcignore: {entry}"


# ---- No keys, identity only, every grant in one place ----


def test_bicep_reads_no_keys() -> None:
    forbidden = ("listkeys(", "listconnectionstrings(", "accountkey=", "sharedaccesskey", "primarykey",
                 "secondarykey", "instrumentationkey")
    for path in _bicep_files():
        text = Bicep.read(path).text.lower()
        found = [f for f in forbidden if f in text]
        assert not found, f"{path.relative_to(ROOT)} uses {found}"


@pytest.mark.parametrize(
    ("resource_type", "flag"),
    [
        ("Microsoft.Storage/storageAccounts", r"allowSharedKeyAccess:\s*false"),
        ("Microsoft.CognitiveServices/accounts", r"disableLocalAuth:\s*true"),
        ("Microsoft.Insights/components", r"(?i)disableLocalAuth:\s*true"),
        ("Microsoft.Cache/redisEnterprise", r"accessKeysAuthentication:\s*'Disabled'"),
    ],
)
def test_local_auth_is_off(resource_type: str, flag: str) -> None:
    declared = [
        (path, body)
        for path in _bicep_files()
        for _, rtype, existing, body in Bicep.read(path).resources()
        if rtype.split("@")[0] == resource_type and not existing
    ]
    assert declared, f"no {resource_type} is declared"
    for path, body in declared:
        assert re.search(flag, body), f"{path.relative_to(ROOT)}: {resource_type} needs {flag}"


def test_every_grant_is_in_rbac_bicep() -> None:
    for path in _bicep_files():
        if path == RBAC:
            continue
        text = Bicep.read(path).text
        assert "roleAssignments" not in text and "accessPolicyAssignments" not in text, (
            f"{path.relative_to(ROOT)}: grants belong in infra/app/rbac.bicep"
        )


def test_rbac_grants_the_roles_the_app_needs_with_named_ids_and_guid_names() -> None:
    rbac = Bicep.read(RBAC)
    for role_id, role in ROLE_IDS.items():
        m = re.search(rf"^var\s+(\w+)\s*=\s*'{role_id}'", rbac.text, re.M)
        assert m, f"rbac.bicep: no named variable for {role}"
        assert len(re.findall(rf"\b{m.group(1)}\b", rbac.code)) > 1, f"rbac.bicep: {role} is never assigned"
    literal_ids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", rbac.text)
    assert len(literal_ids) == len(ROLE_IDS), "role ids belong in the named variables only"
    grants = [(rtype, body) for _, rtype, existing, body in rbac.resources() if not existing
              and rtype.split("@")[0].endswith(("roleAssignments", "accessPolicyAssignments"))]
    assert len(grants) >= 9, "4 roles and a Redis policy for the app, the same (optional) for the user"
    for rtype, body in grants:
        assert re.search(r"name:\s*(replace\()?guid\(", body), f"rbac.bicep: {rtype} needs a guid() name"
    policies = [body for rtype, body in grants if rtype.split("@")[0].endswith("accessPolicyAssignments")]
    assert any("identityPrincipalId" in body for body in policies), "Redis access policy for the app identity"
