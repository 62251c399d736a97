"""The standalone host as a user runs it: embedded defaults, roles, API key, refusing public binds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testing import ROOT
from testing.hosts import StandaloneHost, free_port
from testing.sse import read_stream, reassemble


def plan(base_url: str, headers: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    with httpx.Client(base_url=base_url, timeout=30, headers=headers or {}) as client:
        response = client.post("/api/agents/TravelPlanner/run", content="Plan a 2-day trip to Kyoto",
                               headers={"Content-Type": "text/plain"})
        assert response.status_code == 202, response.text
        run = response.json()
        events = read_stream(client, run["stream_url"]).events
    assert events[-1].kind == "done"
    return run, reassemble(events)


def test_with_no_configuration_it_runs_on_embedded_redis_and_says_so(tmp_path: Path) -> None:
    host = StandaloneHost(None, data_dir=tmp_path / "data", log_path=tmp_path / "host.log")
    redis_dir = str((tmp_path / "data" / "redis").resolve())
    with host:
        _, text = plan(host.base_url)
        assert "## Day 2" in text
        log = host.log()
        assert _processes_working_in(redis_dir), "the embedded redis-server should be running"
    assert not _processes_working_in(redis_dir), "the embedded redis-server should stop with the host"
    assert f"on http://127.0.0.1:{host.port}" in log
    assert "offline demo model, not AI" in log
    assert "durable:  embedded (in this process); redis: embedded" in log
    assert "web:      1 process" in log and "workers:  1 process, up to 256 runs at once each" in log
    assert "curl" in log


def _processes_working_in(folder: str) -> list[str]:
    """Pids whose working directory is `folder` (redis-server moves into its --dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str((proc / "cwd").resolve()) == folder:
                pids.append(proc.name)
        except OSError:
            continue
    return pids


def test_a_web_only_and_a_worker_only_process_serve_a_run_together(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "travelplanner.embedded_backend", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        assert b"127.0.0.1" in (backend.stdout.readline() if backend.stdout else b"")
        shared = {"DURABLE_TASK_SCHEDULER_CONNECTION_STRING": f"Endpoint=http://127.0.0.1:{port};Authentication=None"}
        web = StandaloneHost(redis_url, {**shared, "HOST_ROLE": "web"}, log_path=tmp_path / "web.log")
        worker = StandaloneHost(redis_url, {**shared, "HOST_ROLE": "worker"}, log_path=tmp_path / "worker.log")
        worker_process = _start_worker(worker)
        try:
            with web:
                _, text = plan(web.base_url)
                assert "Kyoto" in text
        finally:
            worker.stop()
        assert "web process" in web.log()
        assert worker_process.returncode is not None
    finally:
        backend.terminate()
        backend.wait(10)


def _start_worker(worker: StandaloneHost) -> subprocess.Popen[bytes]:
    """A worker serves no HTTP, so it is ready when its log says so rather than by health check."""
    log = open(worker.log_path, "ab")  # noqa: SIM115
    worker.process = subprocess.Popen([sys.executable, "-m", "travelplanner"], cwd=ROOT, env=worker.env,
                                      stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 30
    while "worker process" not in worker.log():
        assert worker.process.poll() is None, worker.log()
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.05)
    return worker.process


def test_api_key_guards_every_route_but_health(redis_url: str, tmp_path: Path) -> None:
    with StandaloneHost(redis_url, {"API_KEY": "s3cret-key"}, log_path=tmp_path / "host.log") as host:
        with httpx.Client(base_url=host.base_url, timeout=10) as client:
            assert client.get("/api/health").status_code == 200
            for headers in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
                response = client.post("/api/agents/TravelPlanner/run", content="hi", headers=headers)
                assert response.status_code == 401 and "API key" in response.json()["error"]
                assert client.get("/api/agent/stream/never-seen-before", headers=headers).status_code == 401
        plan(host.base_url, {"Authorization": "Bearer s3cret-key"})
        plan(host.base_url, {"x-api-key": "s3cret-key"})
        with httpx.Client(base_url=host.base_url, timeout=10) as client:  # the page's EventSource way
            assert client.get("/api/agent/stream/never-seen-before?code=s3cret-key").status_code == 404
            assert client.get("/api/agent/stream/never-seen-before?code=wrong").status_code == 401
        assert "s3cret-key" not in host.log()


def test_a_public_address_without_an_api_key_is_refused(tmp_path: Path) -> None:
    host = StandaloneHost(None, {"HOST": "0.0.0.0"}, data_dir=tmp_path, log_path=tmp_path / "host.log")
    host.env["HOST"] = "0.0.0.0"
    with pytest.raises(RuntimeError, match="refusing to bind 0.0.0.0 without API_KEY"):
        host.start(timeout=20)


def test_a_bad_setting_stops_the_host_with_its_name(tmp_path: Path) -> None:
    host = StandaloneHost(None, {"STREAM_MAX_SECONDS": "soon"}, data_dir=tmp_path, log_path=tmp_path / "host.log")
    with pytest.raises(RuntimeError, match="STREAM_MAX_SECONDS: Input should be a valid number"):
        host.start(timeout=20)
