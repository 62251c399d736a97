"""Test utilities every suite shares (tests/, chaos/, bench/): hosts, the SSE client, proxies, models.

Imported from the project root (pytest's `pythonpath`, or `python -m chaos` / `python -m bench` from the
root), so no suite edits `sys.path` or reaches into another suite's files.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
