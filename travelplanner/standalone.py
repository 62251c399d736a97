"""The standalone host: the HTTP contract on FastAPI + uvicorn, agents on the Durable Task framework.

    python -m travelplanner            # or: make run

HOST_ROLE decides what this process is:

- `all` (the default): the whole service on one machine, as a process group
  (`travelplanner.group`): web and worker processes on a shared Redis and
  durable backend, embedded ones unless configured. No configuration at all
  serves http://127.0.0.1:7071 with the offline demo model.
- `web`: HTTP only (`travelplanner.web`); `worker`: agent runs only
  (`travelplanner.worker`). Both need REDIS_CONNECTION_STRING and
  DURABLE_TASK_SCHEDULER_CONNECTION_STRING, and scale independently.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from travelplanner import web, worker
from travelplanner.agent import AGENT_NAME, select_model
from travelplanner.browser_guard import is_loopback
from travelplanner.durable import SchedulerConnection
from travelplanner.group import Group
from travelplanner.settings import Settings, SettingsError
from travelplanner.telemetry import configure as configure_telemetry
from travelplanner.wiring import Wiring

logger = logging.getLogger("travelplanner")

# Libraries that log every tool call and gRPC poll at INFO; their warnings still show.
_CHATTY_LOGGERS = ("agent_framework", "durabletask", "azure", "httpx")


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if not is_loopback(settings.host) and not settings.api_key and not settings.allow_public_bind:
        print(f"refusing to bind {settings.host} without API_KEY (set API_KEY, or ALLOW_PUBLIC_BIND=true "
              "behind your own authentication)", file=sys.stderr)
        return 2
    if settings.host_role == "all":
        return _run_group(settings)
    if not settings.redis_url or not settings.durable_task_scheduler_connection_string:
        print(f"configuration error: HOST_ROLE={settings.host_role} needs REDIS_CONNECTION_STRING and "
              "DURABLE_TASK_SCHEDULER_CONNECTION_STRING (the embedded ones belong to HOST_ROLE=all)",
              file=sys.stderr)
        return 2
    try:
        scheduler = SchedulerConnection.parse(settings.durable_task_scheduler_connection_string)
    except ValueError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    wiring = Wiring(settings, settings.redis_url, configure_telemetry(settings, settings.host_role))
    serve = web.serve if settings.host_role == "web" else worker.serve
    return serve(wiring, None, scheduler)


def _run_group(settings: Settings) -> int:
    group = Group(settings)
    try:
        group.start_shared()
    except Exception as error:
        group.stop_shared()
        print(f"could not start: {error}", file=sys.stderr)
        return 1
    try:
        logger.info("\n%s", describe(settings, group))
        return asyncio.run(group.run())
    finally:
        group.stop_shared()


def describe(settings: Settings, group: Group) -> str:
    url = f"http://{settings.host}:{settings.port}"
    redis = f"embedded (pid {group.redis.pid}, {group.redis.url})" if group.redis else "REDIS_CONNECTION_STRING"
    durable = "embedded (in this process)" if group.backend else "Durable Task Scheduler"
    webs = sum(child.role == "web" for child in group.children)
    workers = len(group.children) - webs
    lines = [
        f"TravelPlanner on {url} (supervisor pid {os.getpid()})",
        f"  model:    {select_model(settings).description}",
        f"  web:      {webs} process{'es' if webs != 1 else ''} on one listening socket",
        f"  workers:  {workers} process{'es' if workers != 1 else ''}, "
        f"up to {settings.max_concurrent_runs} runs at once each",
        f"  durable:  {durable}; redis: {redis}",
        f"  try:      curl -s -X POST {url}/api/agents/{AGENT_NAME}/run -H 'Content-Type: text/plain' "
        "-d 'Plan a 3-day trip to Tokyo'",
        f"            then curl -N {url}<stream_url from the answer>   (or open {url}/ in a browser)",
    ]
    if settings.api_key:
        lines.append("  auth:     API_KEY is set: send Authorization: Bearer <key> or x-api-key")
    return "\n".join(lines)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
