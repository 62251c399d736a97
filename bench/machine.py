"""What the numbers were measured on: cores, memory, Redis, Python, key package versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import redis


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(redis_url: str) -> dict[str, str]:
    info = redis.Redis.from_url(redis_url).info("server")
    loadavg = os.getloadavg()
    return {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": f"{_mem_total_gib():.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "redis": f"{info['redis_version']} ({redis_url.split('@')[-1]})",
        "packages": ", ".join(f"{p} {_version(p)}" for p in
                              ("redis", "hiredis", "uvicorn", "starlette", "sse-starlette", "uvloop", "httptools")),
        "load average at start": " ".join(f"{x:.2f}" for x in loadavg),
    }
