"""function_app.py under the real Azure Functions Python worker, behind a stand-in for the host.

What is real and what is not:

- Real: the deployment package (`testing.deployment`: the project folder minus `.funcignore`), installed
  from the app's requirements.txt into a Python 3.13 venv (`environment.py`), and the library worker
  azure-functions-runtime from PyPI at the version requirements.txt pins. It indexes function_app.py,
  loads each function, converts bindings, serves HTTP streams on its own uvicorn server, runs sync
  functions (the agent entity) on its thread pool, and invokes every function.
- Ours: `worker.py`, the proxy worker's part (the gRPC stream, protobuf classes, sys.path), which ships
  with the Functions host and not on PyPI; `host.py`, the host's part (the gRPC server, routing, the
  HTTP proxying with `x-ms-invocation-id`, the durable client binding and entity signals executed one batch
  per entity at a time); and `function_rpc.proto`, the protocol's messages that the two exchange.

The stand-ins run in subprocesses (host.py starts worker.py), in the worker's venv; the tests talk to the
front door over HTTP as they would to `func start`, and read what the host saw through its `/admin/`
routes (see host.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import httpx

from testing.deployment import build_package
from testing.functions_worker.environment import find_python, worker_venv
from testing.hosts import ServerProcess, free_port

HOST_SCRIPT = Path(__file__).resolve().parent / "host.py"
_NOT_PASSED_ON = ("REDIS_", "STREAM_", "API_KEY", "HOST", "PYTHON", "VIRTUAL_ENV", "PYTEST_")


class FunctionsWorkerHost(ServerProcess):
    """The deployment package served by host.py and the real worker, on a loopback port.

        with FunctionsWorkerHost(redis_url, {"PYTHON_THREADPOOL_THREAD_COUNT": "16"}) as host:
            httpx.post(f"{host.base_url}/api/agents/TravelPlanner/run", ...)
            host.functions()   # the worker's function metadata

    Building the venv (the first time, or after requirements.txt changed) takes a minute; WorkerPythonMissing
    when this machine has no Python 3.13.
    """

    def __init__(self, redis_url: str, settings: dict[str, str] | None = None, *, work_dir: Path | None = None,
                 python: str | None = None) -> None:
        self.venv = worker_venv(python or find_python())
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="functions-worker-"))
        self.package = build_package(self.work_dir / "wwwroot")
        port = free_port()
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(_NOT_PASSED_ON)},
            "REDIS_CONNECTION_STRING": redis_url,
            "PYTHONUNBUFFERED": "1",
            **(settings or {}),
        }
        command = [str(self.venv / "bin" / "python"), str(HOST_SCRIPT), "--app", str(self.package),
                   "--port", str(port), "--log-dir", str(self.work_dir)]
        super().__init__(command, port=port, env=environment, cwd=self.work_dir,
                         log_path=self.work_dir / "host.log")

    def functions(self) -> list[dict[str, Any]]:
        """The functions as the worker indexed them: name, id and bindings (raw, as in a function.json)."""
        return list(httpx.get(f"{self.base_url}/admin/functions", timeout=10).json())

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base_url}/admin/host/status", timeout=10).json())

    def signals(self, key: str | None = None, *, wait_seconds: float | None = None) -> dict[str, Any]:
        """The entity signals the host received (for `key`, if given) and each entity's state; with
        `wait_seconds`, once every one of them has run."""
        params: dict[str, Any] = {"key": key} if key else {}
        if wait_seconds is not None:
            params["wait"] = wait_seconds
        response = httpx.get(f"{self.base_url}/admin/durable/signals", params=params,
                             timeout=(wait_seconds or 0) + 10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def worker_log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.work_dir.glob("worker-*.log")))[-5000:]


def worker_python_or_skip() -> str:
    """Python 3.13 for the worker; without it the test is skipped, except in CI (`CI` set), where it fails."""
    import pytest

    from testing.functions_worker.environment import WorkerPythonMissing

    try:
        return find_python()
    except WorkerPythonMissing as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (CI must run the tests under the real worker)")
        pytest.skip(str(missing))

